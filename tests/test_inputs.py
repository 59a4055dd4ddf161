import pytest
from helpers import ByteTokenizer

from generator.errors import InputError
from generator.inputs import build_inputs
from generator.suite import Inputs, RepeatInputs, SingularInputs

TOK = ByteTokenizer()


def test_embedded_text_windows_start_with_bos_and_are_full():
    t = build_inputs("text", TOK, Inputs(n_samples=5, seq_len=40), 128, 258)
    assert t.ids.shape == (5, 40) and bool(t.mask.all())
    assert (t.ids[:, 0] == TOK.bos_token_id).all()
    assert "pydoc_data" in t.describe()["source"]
    again = build_inputs("text", TOK, Inputs(n_samples=5, seq_len=40), 128, 258)
    assert t.describe()["tokens_sha256"] == again.describe()["tokens_sha256"]


def test_document_windows_pad_with_mask(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "short"}\n\n{"text": "a much longer document here"}\n')
    t = build_inputs("text", TOK, Inputs(source=str(f), n_samples=2, seq_len=12, windows="documents"),
                     128, 258)
    assert t.mask[0].sum() == 1 + 5 and t.mask[1].sum() == 12
    batches = list(t.batches())
    assert sum(int(b.mask.sum()) for b in batches) == int(t.mask.sum())


def test_repeat_and_singular_modes():
    cfg = Inputs(n_samples=3, seq_len=10, repeat=RepeatInputs(tokens=["x", "yz"], seq_len=8),
                 singular=SingularInputs(max_tokens=20, batch_size=7))
    r = build_inputs("repeat", TOK, cfg, 128, 258)
    assert r.ids.shape == (2, 8) and (r.ids[0, 1:] == ord("x")).all() and (r.ids[1, 1:] == ord("y")).all()
    s = build_inputs("singular", TOK, cfg, 128, 258)
    assert s.ids.shape == (20, 1) and len(list(s.batches())) == 3


@pytest.mark.parametrize("case,match", [
    ("too_little", "too little text"), ("empty", "empty"), ("too_long", "beyond the model's context"),
    ("missing", "not found"), ("bad_jsonl", "not a JSON object"), ("bad_mode", "unknown input mode"),
])
def test_input_errors(case, match, tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("just a few words")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"body": 1}\n')
    cfg = {"too_little": Inputs(source=str(small), n_samples=4, seq_len=32),
           "empty": Inputs(source=str(empty)), "too_long": Inputs(seq_len=4096),
           "missing": Inputs(source=str(tmp_path / "none.txt")), "bad_jsonl": Inputs(source=str(bad)),
           "bad_mode": Inputs()}[case]
    with pytest.raises(InputError, match=match) as err:
        build_inputs("bogus" if case == "bad_mode" else "text", TOK, cfg, 1024, 258)
    assert "fix:" in str(err.value)
