"""Tests of ig-otel demo and ig-otel loadtest."""
