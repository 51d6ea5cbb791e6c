"""Tests of the sans-I/O TLCP codec: round trips, escaping, malformed input."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from ig_otel import _tlcp as tlcp
from ig_otel._tlcp import (
    UNCHANGED,
    Malformed,
    Notification,
    NotificationReader,
    Request,
    UnsupportedDiff,
    Update,
    UpdateDecoder,
)

CREATE = (
    "create_session\r\nLS_cid=v%20Wntytg4pkpW36AK3P4hwLri8M4OA68h8x"
    "&LS_send_sync=false&LS_cause=api&LS_password=CST-abc%7CXST-xyz"
)
BATCH = (
    "control\r\n"
    "LS_reqId=1&LS_op=add&LS_subId=1&LS_mode=DISTINCT"
    "&LS_group=CHART%3ACS.D.EURUSD.MINI.IP%3ATICK"
    "&LS_schema=BID%20OFR%20LTP%20LTV%20TTV%20UTM&LS_snapshot=true&LS_ack=false\r\n"
    "LS_reqId=2&LS_op=add&LS_subId=2&LS_mode=MERGE"
    "&LS_group=MARKET%3ACS.D.EURUSD.MINI.IP%20MARKET%3AIX.D.FTSE.DAILY.IP"
    "&LS_schema=BID%20OFFER%20UPDATE_TIME%20MARKET_STATE"
    "&LS_snapshot=true&LS_ack=false"
)


def test_create_session_params_are_form_decoded():
    [request] = tlcp.parse_requests(CREATE)
    assert request.name == "create_session"
    assert request.params["LS_password"] == "CST-abc|XST-xyz"
    assert request.params["LS_cid"].startswith("v Wnty")


def test_request_repr_masks_the_password():
    [request] = tlcp.parse_requests(CREATE)
    assert "abc" not in repr(request)


def test_batched_control_yields_one_request_per_line():
    requests = tlcp.parse_requests(BATCH)
    assert [r.params["LS_reqId"] for r in requests] == ["1", "2"]
    assert requests[1].params["LS_group"] == (
        "MARKET:CS.D.EURUSD.MINI.IP MARKET:IX.D.FTSE.DAILY.IP"
    )
    assert all(r.name == "control" for r in requests)


def test_wsok_and_heartbeat_have_no_params():
    assert tlcp.parse_requests("wsok") == [Request("wsok", {})]
    assert tlcp.parse_requests("heartbeat\r\n\r\n") == [Request("heartbeat", {})]


def test_request_encoder_matches_the_sdk_quoting():
    params = {"LS_group": "PRICE:ABC123:CS.D.EURUSD.MINI.IP", "x": "a+b,c|d e"}
    line = tlcp.encode_params(params)
    assert line == "&".join(
        quote(k, safe="") + "=" + quote(v, safe="") for k, v in params.items()
    )
    [request] = tlcp.parse_requests(tlcp.encode_request("control", params))
    assert request.params == params


def test_unknown_request_and_bad_parameter_line_are_malformed_values():
    assert isinstance(tlcp.parse_requests("bogus\r\nA=1")[0], Malformed)
    [bad] = tlcp.parse_requests("control\r\nnoequals")
    assert isinstance(bad, Malformed)
    [bad_utf8] = tlcp.parse_requests("control\r\nA=%FF")
    assert isinstance(bad_utf8, Malformed)
    assert isinstance(tlcp.parse_requests("bind_session\r\nA=1\r\nB=2")[0], Malformed)


@pytest.mark.parametrize(
    "line",
    [
        tlcp.encode_wsok(),
        tlcp.encode_conok("S1a2b", 50000, 5000),
        tlcp.encode_conerr(65, "Unsupported protocol version: 2.5.0"),
        tlcp.encode_servname("Lightstreamer HTTP Server"),
        tlcp.encode_clientip("127.0.0.1"),
        tlcp.encode_cons(),
        tlcp.encode_probe(),
        tlcp.encode_noop("x"),
        tlcp.encode_loop(0),
        tlcp.encode_end(48, "Maximum session duration"),
        tlcp.encode_reqok(3),
        tlcp.encode_reqok(),
        tlcp.encode_reqerr(3, 21, "Invalid group"),
        tlcp.encode_error(67, "malformed"),
        tlcp.encode_subok(1, 2, 4),
        tlcp.encode_subcmd(1, 1, 4, 1, 2),
        tlcp.encode_conf(1, "unlimited", True),
        tlcp.encode_eos(1, 1),
        tlcp.encode_cs(1, 1),
        tlcp.encode_ov(1, 1, 7),
        tlcp.encode_unsub(1),
        tlcp.encode_sync(10),
        tlcp.encode_prog(13),
        tlcp.encode_msgdone("*", 1, ""),
        tlcp.encode_msgdone("*", 1, None),
        tlcp.encode_msgfail("seq", 1, 32, "refused, sorry"),
    ],
)
def test_every_encoded_notification_parses_back(line):
    event = tlcp.parse_notification(line)
    assert isinstance(event, Notification)
    assert event.tag == line.split(",")[0]


def test_commas_in_textual_arguments_are_encoded():
    line = tlcp.encode_reqerr(4, 23, "Invalid schema, field X, 100%")
    assert line.count(",") == 3
    event = tlcp.parse_notification(line)
    assert event.text_arg(2) == "Invalid schema, field X, 100%"
    assert event.int_arg(1) == 23


def test_conerr_message_matches_the_reference_form():
    assert tlcp.encode_conerr(65, "Unsupported protocol version: 2.5.0") == (
        "CONERR,65,Unsupported%20protocol%20version:%202.5.0"
    )


def test_split_keeps_bare_lf_inside_a_line():
    assert tlcp.split_message("PROBE\r\nNOOP,a\nb\r\n\r\nLOOP,0") == [
        "PROBE",
        "NOOP,a\nb",
        "LOOP,0",
    ]


def test_reader_parses_a_packed_message_in_order():
    message = tlcp.join_lines(
        [tlcp.encode_subok(1, 1, 3), "U,1,1,a|b|c", tlcp.encode_probe()]
    )
    events = NotificationReader().feed(message)
    assert [e.tag for e in events] == ["SUBOK", "U", "PROBE"]
    assert events[1] == Update(1, 1, "a|b|c")


def test_update_values_may_contain_commas():
    event = tlcp.parse_notification('U,3,1,|{"a":1,"b":2}|')
    assert event == Update(3, 1, '|{"a":1,"b":2}|')


@pytest.mark.parametrize(
    "line",
    [
        "U,1,1",
        "U,x,1,a",
        "SUBOK,1,2",
        "SUBOK,a,1,1",
        "CONOK,S,x,5000,*",
        "OV,1,1",
        "PROBE,1",
        "",
        "garbage line with spaces",
    ],
)
def test_malformed_lines_become_values(line):
    assert isinstance(tlcp.parse_notification(line), Malformed)


def test_reader_turns_binary_frames_into_malformed():
    [event] = NotificationReader().feed(b"U,1,1,a")
    assert isinstance(event, Malformed)


def test_unknown_tags_pass_through_as_notifications():
    assert tlcp.parse_notification("MPNREG,1,2") == Notification("MPNREG", ("1", "2"))


def test_update_encoder_uses_compact_tokens():
    previous = ["1.1", "2", "x", "y", "z", "w", "v"]
    current = ["1.2", "2", "x", "y", "z", "w", None]
    assert tlcp.encode_update(1, 1, previous, current) == "U,1,1,1.2|^5|#"
    assert tlcp.encode_update(1, 1, previous, current, runs=False) == (
        "U,1,1,1.2||||||#"
    )


@pytest.mark.parametrize(
    ("value", "token"),
    [
        (None, "#"),
        ("", "$"),
        ("#", "%23"),
        ("$", "%24"),
        ("^3", "%5E3"),
        ("a|b%c", "a%7Cb%25c"),
        ("line\r\nbreak", "line%0D%0Abreak"),
        ("a#b", "a#b"),
        ("café", "café"),
    ],
)
def test_value_encoding_escapes_what_the_sdk_needs(value, token):
    assert tlcp.encode_value(value) == token


def test_decoder_reconstructs_full_values():
    decoder = UpdateDecoder(5)
    first = decoder.decode(1, "a|b|c|d|e")
    assert first.values == ("a", "b", "c", "d", "e")
    second = decoder.decode(1, "|^3|#")
    assert second.values == ("a", "b", "c", "d", None)
    assert second.changed == (4,)
    third = decoder.decode(1, "$||x")
    assert third.values == ("", "b", "x", "d", None)


def test_decoder_follows_reference_experiment_e16():
    decoder = UpdateDecoder(3)
    update = decoder.decode(1, "a%7Cb|50%25|caf%C3%A9")
    assert update.values == ("a|b", "50%", "café")
    plus = decoder.decode(2, "a+b||")
    assert plus.values[0] == "a+b"


@pytest.mark.parametrize("raw", ["50%", "%zz1", "a|b|c|d", "^0", "^x", "^5", "%FF"])
def test_decoder_reports_bad_tokens_as_malformed(raw):
    assert isinstance(UpdateDecoder(3).decode(1, raw), Malformed)


def test_short_first_update_leaves_missing_fields_null():
    assert UpdateDecoder(3).decode(1, "a").values == ("a", None, None)


def test_diff_tokens_are_passed_through():
    update = UpdateDecoder(2).decode(1, 'x|^P[{"op":"add"}]')
    assert update.values[1] == UnsupportedDiff("P", '[{"op":"add"}]')


def test_items_are_tracked_separately_and_cleared():
    decoder = UpdateDecoder(1)
    decoder.decode(1, "a")
    decoder.decode(2, "b")
    assert decoder.decode(1, "").values == ("a",)
    decoder.clear(1)
    assert decoder.decode(1, "").values == (None,)
    assert UNCHANGED is tlcp.UNCHANGED


@pytest.mark.parametrize(
    "values",
    [
        ["1.1", "1.2", "20:35:43", "TRADEABLE"],
        [None, "", "#", "$"],
        ["^1", "a|b", "%", "\r\n"],
        ['{"dealReference":"X","status":"OPEN"}', None, None, None],
    ],
)
def test_encoder_and_decoder_round_trip(values):
    previous = ["1.1", None, "x", "TRADEABLE"]
    decoder = UpdateDecoder(4)
    decoder.decode(1, tlcp.encode_update(1, 1, None, previous).split(",", 3)[3])
    line = tlcp.encode_update(1, 1, previous, values)
    event = tlcp.parse_notification(line)
    assert decoder.decode(event.item, event.raw).values == tuple(values)
