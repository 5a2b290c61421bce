from fmstack.engines.decoding import TextAssembler


def feed(assembler: TextAssembler, pieces: list[bytes]) -> str:
    out = []
    for piece in pieces:
        if (delta := assembler.push(piece)) is not None:
            out.append(delta.text)
        if assembler.stopped:
            break
    if (delta := assembler.flush()) is not None:
        out.append(delta.text)
    return "".join(out)


def test_stop_string_split_across_tokens_never_leaks():
    a = TextAssembler(["END"])
    assert feed(a, [b"hello E", b"N", b"D tail"]) == "hello "
    assert a.stopped


def test_text_that_only_looks_like_a_stop_prefix_is_released():
    a = TextAssembler(["END"])
    assert feed(a, [b"hello E", b"Nx"]) == "hello ENx"
    assert not a.stopped


def test_utf8_character_split_across_tokens():
    snowman = "☃".encode()
    a = TextAssembler([])
    assert a.push(snowman[:1]) is None
    assert a.push(snowman[1:]).text == "☃"


def test_stop_at_start_gives_no_text():
    a = TextAssembler(["\n"])
    assert feed(a, [b"\n", b"more"]) == ""


def test_earliest_stop_string_wins_whatever_its_order_in_the_list():
    assert feed(TextAssembler(["B", "A"]), [b"xAyB"]) == "x"
