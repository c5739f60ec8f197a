"""The StatsD/DogStatsD line grammar: every type, fields, packing, and every way a line can be malformed."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receivers.statsd.parser import (
    COUNTER,
    DISTRIBUTION,
    GAUGE,
    HISTOGRAM,
    SET,
    TIMER,
    ParseResult,
    StatsDParser,
    canonical_tags,
    split_key,
)


def parse(*datagrams: bytes, **kw: int) -> ParseResult:
    return StatsDParser(**kw).parse(list(datagrams))


def test_every_type_plain() -> None:
    r = parse(b"hits:3|c", b"temp:21.5|g", b"lat:320|ms", b"size:1500|h", b"tok:42.5|d", b"users:alice|s")
    assert r.by_type[COUNTER] == [("hits", 3)]
    assert type(r.by_type[COUNTER][0][1]) is int
    assert r.by_type[GAUGE] == [("temp", 21.5, False)]
    assert r.by_type[TIMER] == [("lat", 320.0)]
    assert r.by_type[HISTOGRAM] == [("size", 1500.0)]
    assert r.by_type[DISTRIBUTION] == [("tok", 42.5)]
    assert r.by_type[SET] == [("users", "alice")]
    assert r.lines == 6
    assert not r.refused and not r.ignored and not r.weighted and not r.timed


def test_counter_values_keep_their_exactness() -> None:
    r = parse(b"a:0.25|c\nb:7|c\nc:1e3|c\nd:12345678901234567890123|c")
    assert r.by_type[COUNTER] == [("a", 0.25), ("b", 7), ("c", 1000.0), ("d", 12345678901234567890123)]
    assert [type(v) for _, v in r.by_type[COUNTER]] == [float, int, float, int]


def test_sample_rates_scale_counters_and_weigh_distributions() -> None:
    r = parse(b"a:1|c|@0.5\nb:1|c|@0.3\nc:2.5|c|@0.5\nt:100|ms|@0.25\nh:4|h|@0.5\ng:5|g|@0.1\ns:x|s|@0.5")
    assert r.by_type[COUNTER] == [("a", 2), ("b", 1 / 0.3), ("c", 5.0)]
    assert type(r.by_type[COUNTER][0][1]) is int  # a whole value over a rate giving a whole result stays exact
    assert r.weighted == [(TIMER, "t", 100.0, 4.0), (HISTOGRAM, "h", 4.0, 2.0)]
    assert r.by_type[TIMER] == [] and r.by_type[HISTOGRAM] == []
    # gauges and sets have no rate semantics: the rate is validated and otherwise ignored
    assert r.by_type[GAUGE] == [("g", 5, False)]
    assert r.by_type[SET] == [("s", "x")]
    assert r.lines == 7


@pytest.mark.parametrize("rate", [b"0", b"1.5", b"-0.5", b"abc", b"", b"nan", b"inf"])
def test_bad_sample_rates_are_refused(rate: bytes) -> None:
    r = parse(b"a:1|c|@" + rate + b"\nok:1|c")
    assert r.refused == {"bad_sample_rate": 1}
    assert r.by_type[COUNTER] == [("ok", 1)]


def test_relative_and_absolute_gauges() -> None:
    r = parse(b"g:10|g\ng:+5|g\ng:-3|g\ng:-0.5|g\ng:+1.25|g\ng:0|g")
    assert r.by_type[GAUGE] == [("g", 10, False), ("g", 5, True), ("g", -3, True), ("g", -0.5, True),
                                ("g", 1.25, True), ("g", 0, False)]


def test_tags_become_a_canonical_attribute_key() -> None:
    r = parse(b"a:1|c|#b:2,a:1", b"a:1|c|#a:1,b:2", b"a:1|c|#prod,env:dev,env:prod", b"a:1|c|#url:http://x:8080/p")
    keys = [k for k, _ in r.by_type[COUNTER]]
    assert keys[0] == keys[1] == "a\na:1,b:2"
    assert split_key(keys[0]) == ("a", [("a", "1"), ("b", "2")])
    assert split_key(keys[2]) == ("a", [("env", "prod"), ("prod", "")])  # last value wins, valueless → ''
    assert split_key(keys[3]) == ("a", [("url", "http://x:8080/p")])


def test_empty_tag_list_means_no_attributes() -> None:
    r = parse(b"a:1|c|#", b"a:1|c|#,,")
    assert [k for k, _ in r.by_type[COUNTER]] == ["a", "a"]


def test_container_id_timestamp_and_unknown_fields() -> None:
    r = parse(b"a:1|c|#env:prod|c:abc123|T1700000000|e:it-false,cn-x|card:low")
    assert r.by_type[COUNTER] == [("a\ncontainer.id:abc123,env:prod", 1)]
    assert r.timed == [(COUNTER, "a\ncontainer.id:abc123,env:prod", 1_700_000_000 * 10**9)]
    assert r.ignored == {"unknown_field": 2}
    assert r.lines == 1 and not r.refused


def test_fields_in_any_order_and_several_tag_fields() -> None:
    r = parse(b"a:2|c|T1700000000|#b:1|@0.5|#a:2")
    assert r.by_type[COUNTER] == [("a\na:2,b:1", 4)]
    assert r.timed == [(COUNTER, "a\na:2,b:1", 1_700_000_000 * 10**9)]


def test_container_id_alone_and_the_memo_keeps_containers_apart() -> None:
    p = StatsDParser()
    r = p.parse([b"a:1|c|#x:1|c:one", b"a:1|c|#x:1|c:two", b"a:1|c|#x:1", b"a:1|c|c:one"])
    assert [k for k, _ in r.by_type[COUNTER]] == ["a\ncontainer.id:one,x:1", "a\ncontainer.id:two,x:1", "a\nx:1",
                                                  "a\ncontainer.id:one"]


def test_a_refused_line_leaves_no_timestamp_or_field_count_behind() -> None:
    r = parse(b"a:zz|g|T1700000000|x:y")
    assert r.refused == {"bad_value": 1}
    assert r.timed == [] and r.ignored == {}


@pytest.mark.parametrize("ts", [b"T", b"Tabc", b"T-5", b"T1.5", b"T99999999999999"])
def test_bad_timestamps_are_refused(ts: bytes) -> None:
    r = parse(b"a:1|g|" + ts)
    assert r.refused == {"bad_timestamp": 1} and r.lines == 0


def test_dogstatsd_value_packing() -> None:
    r = parse(b"h:1:2:3|h|#k:v\nc:1:2|c\ng:5:+1:-2|g\nt:10:20|ms|@0.5\nd:0.5:1.5|d")
    assert r.by_type[HISTOGRAM] == [("h\nk:v", 1.0), ("h\nk:v", 2.0), ("h\nk:v", 3.0)]
    assert r.by_type[COUNTER] == [("c", 1), ("c", 2)]
    assert r.by_type[GAUGE] == [("g", 5, False), ("g", 1, True), ("g", -2, True)]
    assert r.weighted == [(TIMER, "t", 10.0, 2.0), (TIMER, "t", 20.0, 2.0)]
    assert r.by_type[DISTRIBUTION] == [("d", 0.5), ("d", 1.5)]
    assert r.lines == 5


def test_a_bad_packed_value_refuses_the_whole_line() -> None:
    r = parse(b"h:1:x:3|h\nh:1::3|h\nok:1|h")
    assert r.refused == {"bad_value": 2}
    assert r.by_type[HISTOGRAM] == [("ok", 1.0)]


def test_set_members_are_kept_whole() -> None:
    r = parse(b"s:a:b|s\ns:1.0|s")
    assert r.by_type[SET] == [("s", "a:b"), ("s", "1.0")]


def test_multi_line_datagram_with_malformed_lines_in_the_middle() -> None:
    dgram = b"\n".join([
        b"good.one:1|c",
        b"no_colon_here",
        b":1|c",                       # empty name
        b"x" * 1001 + b":1|c",         # huge name
        b"a:1|c|@2",                   # bad sample rate
        b"a:abc|c",                    # bad value
        b"a:1|zz",                     # unknown type
        b"a:1",                        # no type
        b"a:|c",                       # empty value
        b"a:-1|c",                     # negative counter
        b"t:-5|ms",                    # negative duration
        b"a:nan|g",                    # not finite
        b"a:inf|h",
        b"good.two:2|g",
        b"",
        b"good.three:3|ms",
    ])
    r = parse(dgram)
    assert r.lines == 3
    assert r.by_type[COUNTER] == [("good.one", 1)]
    assert r.by_type[GAUGE] == [("good.two", 2, False)]
    assert r.by_type[TIMER] == [("good.three", 3.0)]
    assert r.refused == {"malformed_line": 2, "empty_name": 1, "name_too_long": 1, "bad_sample_rate": 1,
                         "bad_value": 5, "unknown_type": 1, "negative_counter": 1}
    assert r.examples["unknown_type"] == "a:1|zz"
    assert r.examples["name_too_long"].startswith("xxx") and len(r.examples["name_too_long"]) == 200


def test_name_length_limit_is_configurable() -> None:
    assert parse(b"abcdef:1|c", max_name_length=5).refused == {"name_too_long": 1}
    assert parse(b"abcde:1|c", max_name_length=5).lines == 1


def test_events_and_service_checks_are_counted_and_skipped() -> None:
    r = parse(b"_e{5,4}:title|text|#env:prod\n_sc|db.ok|0|#env:prod|m:fine\na:1|c",
              b"_e{1,1}:a|c")  # an event whose text looks like a counter type is still an event
    assert r.ignored == {"event": 2, "service_check": 1}
    assert r.by_type[COUNTER] == [("a", 1)]
    assert r.lines == 1 and not r.refused


def test_underscore_names_are_still_metrics() -> None:
    r = parse(b"_private:1|c\n_e:1|c")
    assert r.by_type[COUNTER] == [("_private", 1), ("_e", 1)]


def test_invalid_utf8_spoils_only_its_own_line() -> None:
    r = parse(b"a:1|c", b"b:1|c\nbad\xff\xfe:1|c\nc:1|c", b"d:\xc3\xa9|s")
    assert r.refused == {"invalid_utf8": 1}
    assert [k for k, _ in r.by_type[COUNTER]] == ["a", "b", "c"]
    assert r.by_type[SET] == [("d", "é")]
    assert r.examples["invalid_utf8"] == "bad\\xff\\xfe:1|c"


def test_crlf_line_endings_and_padded_types_are_tolerated() -> None:
    r = parse(b"a:1|c\r\nb:2|g \r\n")
    assert r.by_type[COUNTER] == [("a", 1)]
    assert r.by_type[GAUGE] == [("b", 2, False)]


def test_huge_numbers_are_refused_not_raised() -> None:
    r = parse(b"a:" + b"9" * 5000 + b"|c\nb:" + b"9" * 5000 + b"|g\nok:1|c")
    assert r.refused == {"bad_value": 2}
    assert r.lines == 1


def test_canonical_tags() -> None:
    assert canonical_tags("b:2,a:1,a:3,flag") == "a:3,b:2,flag:"
    assert canonical_tags("", "cid") == "container.id:cid"
    assert canonical_tags(":novalue,k:") == "k:"


def test_parse_appends_to_a_given_result() -> None:
    p = StatsDParser()
    res = ParseResult()
    p.parse([b"a:1|c"], res)
    p.parse([b"a:2|c"], res)
    assert res.by_type[COUNTER] == [("a", 1), ("a", 2)] and res.lines == 2
    assert p.parse([]).lines == 0


_LINE_CHARS = st.sampled_from(list("ab.:|#@,+-0123456789cgmshdTe_{}\xe9 "))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.text(_LINE_CHARS, max_size=40), min_size=1, max_size=8))
def test_every_line_is_accounted_for_exactly_once(lines: list[str]) -> None:
    """Fuzz: parsing never raises, and each non-empty line is good, refused or an ignored event/check."""
    r = parse("\n".join(lines).encode())
    nonempty = sum(1 for ln in "\n".join(lines).split("\n") if ln)
    skipped = r.ignored.get("event", 0) + r.ignored.get("service_check", 0)
    assert r.lines + sum(r.refused.values()) + skipped == nonempty


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=60), min_size=1, max_size=6))
def test_arbitrary_bytes_never_raise(datagrams: list[bytes]) -> None:
    r = parse(*datagrams)
    assert r.lines >= 0


@pytest.mark.parametrize("name", [" ", "   ", "\t", "\x00", "\x7f", " \u00a0\u200b\u3000", "\ufeff"])
def test_names_without_a_visible_character_are_refused(name: str) -> None:
    r = parse(f"{name}:1|c\nok:1|c\n{name}:2|g|#k:v".encode())
    assert r.refused == {"invalid_name": 2}
    assert r.by_type[COUNTER] == [("ok", 1)] and r.lines == 1
    assert r.examples["invalid_name"] == f"{name}:1|c"


@pytest.mark.parametrize("name", [" a", "a ", "é", "\u00a0x", "x\x00", "_", "-", "…"])
def test_names_with_a_visible_character_are_kept(name: str) -> None:
    r = parse(f"{name}:1|c".encode())
    assert r.by_type[COUNTER] == [(name, 1)] and not r.refused
