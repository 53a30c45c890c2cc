"""The SSE decoder: line endings, comments, fields, UTF-8 and any chunking."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiotongyi._sse import SSEDecoder, SSEEvent, SSEProtocolError

FRAME = (
    'id:1\nevent:result\n:HTTP_STATUS/200\ndata:{"output":{"choices":[{"message":'
    '{"content":"春眠","role":"assistant"},"finish_reason":"null"}]},"request_id":"r1"}\n\n'
).encode()
TRANSCRIPT = (
    b": ping\n\n"
    + FRAME
    + b'id:2\nevent:error\n:HTTP_STATUS/429\ndata:{"code":"Throttling"}\n\n'
    + b'id:3\nevent: result\ndata: {"a":\ndata: 1}\nretry: 10\nunknown: x\n\n'
    + 'id:4\ndata:{"t":"不觉晓🌸"}\n'.encode()
)


def decode_all(chunks: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.flush()


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


EXPECTED = decode_all([TRANSCRIPT])


def test_transcript_decodes_to_the_expected_events() -> None:
    assert [e.event for e in EXPECTED] == ["result", "error", "result", "message"]
    assert [e.id for e in EXPECTED] == ["1", "2", "3", "4"]
    assert [e.status for e in EXPECTED] == [200, 429, None, None]
    assert EXPECTED[2].data == b'{"a":\n1}'
    assert EXPECTED[3].data.decode() == '{"t":"不觉晓🌸"}'


@settings(max_examples=300, deadline=None)
@given(cuts=st.lists(st.integers(0, len(TRANSCRIPT)), unique=True))
def test_any_chunking_decodes_to_the_same_events(cuts: list[int]) -> None:
    assert decode_all(split_at(TRANSCRIPT, sorted(cuts))) == EXPECTED


@settings(max_examples=200, deadline=None)
@given(
    ending=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    cuts=st.lists(st.integers(0, 2 * len(TRANSCRIPT)), unique=True),
)
def test_every_line_ending_and_chunking_gives_the_same_events(
    ending: bytes, cuts: list[int]
) -> None:
    data = TRANSCRIPT.replace(b"\n", ending)
    cuts = sorted(c for c in cuts if c <= len(data))
    assert decode_all(split_at(data, cuts)) == EXPECTED


def test_one_byte_chunks_give_the_same_events() -> None:
    assert decode_all([TRANSCRIPT[i : i + 1] for i in range(len(TRANSCRIPT))]) == EXPECTED


def test_crlf_split_across_chunks_is_one_break() -> None:
    events = decode_all([b"data:1\r", b"\ndata:2\r", b"\n\r", b"\n"])
    assert events == [SSEEvent("message", b"1\n2")]


def test_lone_cr_frames_are_decoded() -> None:
    data = FRAME.replace(b"\n", b"\r") * 4
    assert len(decode_all([data])) == 4


def test_space_after_colon_is_optional() -> None:
    assert decode_all([b"event: error\ndata: {}\n\n"]) == decode_all([b"event:error\ndata:{}\n\n"])


def test_last_event_without_blank_line_is_dispatched_at_eof() -> None:
    assert decode_all([b"id:9\nevent:result\ndata:{}"]) == [SSEEvent("result", b"{}", "9")]
    assert decode_all([b"id:9\nevent:result\ndata:{}\n"]) == [SSEEvent("result", b"{}", "9")]


def test_an_id_line_ends_an_event_missing_its_blank_line() -> None:
    events = decode_all([b"id:1\ndata:a\nid:2\ndata:b\n\n"])
    assert [(e.id, e.data) for e in events] == [("1", b"a"), ("2", b"b")]


def test_comments_and_keepalives_are_ignored_but_status_is_kept() -> None:
    events = decode_all([b":keepalive\n\n: ping\n:HTTP_STATUS/503\ndata:{}\n\n"])
    assert events == [SSEEvent("message", b"{}", None, 503)]


def test_empty_data_and_done_marker_are_skipped() -> None:
    assert decode_all([b"data:\n\ndata: [DONE]\n\n"]) == []


def test_leading_bom_is_stripped_once() -> None:
    events = decode_all([b"\xef\xbb", b"\xbfdata:1\n\n\xef\xbb\xbfdata:2\n\n"])
    assert [e.data for e in events] == [b"1"]  # the second BOM makes an unknown field name


def test_utf8_character_split_across_chunks_comes_out_whole() -> None:
    raw = "data:晓\n\n".encode()
    events = decode_all([raw[:6], raw[6:7], raw[7:]])
    assert events[0].data.decode() == "晓"


def test_status_comment_does_not_leak_into_the_next_event() -> None:
    events = decode_all([b":HTTP_STATUS/400\ndata:1\n\ndata:2\n\n"])
    assert [e.status for e in events] == [400, None]


def test_a_10_mib_frame_fed_one_byte_at_a_time_decodes() -> None:
    payload = b"x" * (10 * 1024 * 1024)
    data = b"data:" + payload + b"\n\n"
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    feed = decoder.feed
    for i in range(len(data)):
        events += feed(data[i : i + 1])
    assert len(events) == 1
    assert len(events[0].data) == len(payload)


def test_an_endless_line_stops_at_the_event_cap() -> None:
    decoder = SSEDecoder(max_event_bytes=1000)
    decoder.feed(b"data:")
    with pytest.raises(SSEProtocolError):
        for _ in range(100):
            decoder.feed(b"a" * 100)


def test_many_data_lines_stop_at_the_event_cap() -> None:
    decoder = SSEDecoder(max_event_bytes=1000)
    with pytest.raises(SSEProtocolError):
        decoder.feed(b"data:" + b"a" * 50 + b"\n" * 1 + b"data:aaaaaaaaaa\n" * 100)


def test_a_frame_below_the_cap_decodes() -> None:
    decoder = SSEDecoder(max_event_bytes=1000)
    assert decoder.feed(b"data:" + b"a" * 900 + b"\n\n")[0].data == b"a" * 900


def test_invalid_utf8_in_a_field_name_is_a_protocol_error() -> None:
    with pytest.raises(SSEProtocolError):
        decode_all([b"event:\xff\xfe\ndata:{}\n\n"])


def test_an_id_holding_nul_is_ignored() -> None:
    # WHATWG: "If the field value does not contain U+0000 NULL, then set the
    # last event ID buffer"; otherwise the field is ignored, so it does not
    # end the event either.
    decoder = SSEDecoder()
    events = decoder.feed(b'data:{"a":\nid: 1\x002\ndata:1}\n\n')
    assert [(e.data, e.id) for e in events] == [(b'{"a":\n1}', None)]
    events = decoder.feed(b"id: 7\ndata:x\n\n")
    assert [(e.data, e.id) for e in events] == [(b"x", "7")]


# Pieces of frames near the common DashScope shape: the fast path must take
# exactly the frames the general path would decode the same way.
_ID = st.sampled_from(
    [b"id:1", b"id: 7", b"id:", b"id:  x", b"id:a:b", b"id:\xe4\xb8\x80", b"id:1\0"]
)
_EVENT = st.sampled_from([b"event:result", b"event: result", b"event:error", b""])
_STATUS = st.sampled_from([b":HTTP_STATUS/200", b":HTTP_STATUS/429", b": ping", b""])
_DATA = st.sampled_from(
    [
        *(b'data:{"a":1}', b'data: {"a":1}', b"data:  x", b"data: ", b"data:", b"data:[DONE]"),
        *(b"data: [DONE]", b"data:a\ndata:b", b"data:\xe6\x98\xa5"),
        # long enough that later frames of the stream take the head-only match
        *(b"data:" + b"L" * 2100, b"data:  " + b"L" * 2100, b"data:" + b"L" * 2100 + b"\ndata:b"),
    ]
)


@given(
    frames=st.lists(st.tuples(_ID, _EVENT, _STATUS, _DATA, st.booleans()), max_size=6),
    cuts=st.lists(st.integers(0, 12000), unique=True, max_size=4),
)
def test_common_frames_decode_as_the_general_path_does(
    frames: list[tuple[bytes, bytes, bytes, bytes, bool]], cuts: list[int]
) -> None:
    body = b"".join(
        b"".join(line + b"\n" for line in (i, e, s, d) if line) + (b"\n" if blank else b"")
        for i, e, s, d, blank in frames
    )
    expected = decode_all([body[i : i + 1] for i in range(len(body))])  # never the fast path
    assert decode_all(split_at(body, sorted(c for c in cuts if c <= len(body)))) == expected
    assert decode_all([body]) == expected


def test_after_a_long_frame_the_head_match_still_sends_odd_frames_the_general_way() -> None:
    long = b"L" * 3000
    body = (
        b"id:1\nevent:result\n:HTTP_STATUS/200\ndata:" + long + b"\n\n"  # switches to heads
        b"id:2\nevent:result\n:HTTP_STATUS/200\ndata:" + long + b"\ndata:b\n\n"  # two lines
        b"id:3\nevent:result\n:HTTP_STATUS/200\ndata:[DONE]\n\n"
        b"id:4\nevent:result\n:HTTP_STATUS/200\ndata:short\n\n"
        b"id:5\nevent:result\n:HTTP_STATUS/200\ndata:" + long  # unfinished at the end
    )
    expected = decode_all([body[i : i + 1] for i in range(len(body))])
    assert [(e.id, e.data[:6]) for e in expected] == [
        ("1", b"LLLLLL"),
        ("2", b"LLLLLL"),
        ("4", b"short"),
        ("5", b"LLLLLL"),
    ]
    assert expected[1].data == long + b"\nb"
    assert decode_all([body]) == expected
    for cut in range(0, len(body), 997):
        assert decode_all([body[:cut], body[cut:]]) == expected


def test_after_a_split_frame_only_its_blank_line_hands_the_rest_to_the_fast_path() -> None:
    common = b"id:3\nevent:result\n:HTTP_STATUS/200\ndata:c\n\n"
    bodies = (
        b"id:1\nevent:result\n:HTTP_STATUS/200\ndata:" + b"a" * 50 + b"\n\n" + common,
        # no blank line: the next id ends it (the general path's rule), not the fast path
        b"id:1\nevent:result\n:HTTP_STATUS/200\ndata:" + b"a" * 50 + b"\n" + common,
        b"id:1\ndata:" + b"a" * 50 + b"\ndata:b\n\n" + common,
        # after the line, not a blank line but a field that merely ends in a common head
        b"id:1\ndata:" + b"a" * 50 + b"\nX" + common,
    )
    for body in bodies:
        expected = decode_all([body[i : i + 1] for i in range(len(body))])
        for cut in range(1, len(body)):
            assert decode_all([body[:cut], body[cut:]]) == expected, (body, cut)
