"""CLIP's BPE tokenizer: golden ids, truncation, cleaning, agreement with an independent
implementation (Hugging Face's), round trips, the pinned vocabulary hash, and no torch."""
import gzip
import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from vlrt.errors import VlrtError
from vlrt.runtime.tokenizer import BUNDLED_VOCAB, N_MERGES, VOCAB_SHA256, ClipTokenizer

SOT, EOT = 49406, 49407
LONG = ("a man in a red jacket is riding a bicycle down a steep mountain road while a crowd of "
        "people cheers and takes photographs from the side of the road")


@pytest.fixture(scope="module")
def tok() -> ClipTokenizer:
    return ClipTokenizer()


def test_constants_and_bundled_vocab(tok):
    assert (tok.sot_id, tok.eot_id, tok.pad_id, tok.vocab_size) == (49406, 49407, 0, 49408)
    assert tok.vocab_path == BUNDLED_VOCAB and tok.vocab_path.name == "bpe_simple_vocab_16e6.txt.gz"
    assert tok.vocab_sha256 == VOCAB_SHA256 == "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
    assert ClipTokenizer(str(BUNDLED_VOCAB)).encode("a cat") == [320, 2368]


def test_golden_photo_of_a_cat(tok):
    ids = tok("a photo of a cat", context_length=77)
    assert ids.shape == (1, 77) and ids.dtype == np.int64
    assert ids[0].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407] + [0] * 70
    assert tok.encode("a photo of a cat") == [320, 1125, 539, 320, 2368]


def test_batch_rows_match_single_texts(tok):
    texts = ["a dog", "two people dancing on a stage", ""]
    batch = tok(texts, context_length=12)
    assert batch.shape == (3, 12) and batch.dtype == np.int64
    for row, text in zip(batch, texts):
        assert row.tolist() == tok(text, context_length=12)[0].tolist()
    assert batch[2].tolist() == [SOT, EOT] + [0] * 10  # empty text: just the frame
    assert tok([], context_length=5).shape == (0, 5)


def test_truncation_keeps_sot_first_ids_and_eot(tok):
    ids = tok.encode(LONG)
    assert len(ids) > 20
    assert tok(LONG, context_length=8)[0].tolist() == [SOT, *ids[:6], EOT]


def test_exact_fit_has_no_padding(tok):
    ids = tok.encode("a photo of a cat")
    row = tok("a photo of a cat", context_length=len(ids) + 2)[0].tolist()
    assert row == [SOT, *ids, EOT] and 0 not in row


@pytest.mark.parametrize("bad", [2, 1, 0, -5])
def test_context_length_below_three_is_refused(tok, bad):
    with pytest.raises(VlrtError, match="context_length"):
        tok("a cat", context_length=bad)


def test_minimum_context_keeps_one_token(tok):
    assert tok(LONG, context_length=3)[0].tolist() == [SOT, tok.encode(LONG)[0], EOT]


@pytest.mark.parametrize(("dirty", "clean"), [
    ("Tom &amp; Jerry", "tom & jerry"),
    ("fish &amp;amp; chips", "fish & chips"),  # escaped twice: CLIP unescapes twice
    ("&lt;b&gt;Bold&lt;/b&gt;", "<b>bold</b>"),
    ("  A   PHOTO\tof\n a  CAT \r\n", "a photo of a cat"),
    ("A PHOTO OF A CAT", "a photo of a cat"),
    ("cafÃ© au lait", "café au lait"),  # mojibake, fixed by ftfy
    ("“Quoted” don’t", "\"quoted\" don't"),  # curly quotes, uncurled by ftfy
    ("ﬁne ＦＵＬＬ width", "fine full width"),  # ligature and full-width forms, by ftfy
])
def test_cleaning_matches_clean_text(tok, dirty, clean):
    assert tok.encode(dirty) == tok.encode(clean)


def hf_clip_tokenizer(tmp_path, vocab_path):
    """Hugging Face's CLIP tokenizer (the Rust `tokenizers` BPE) built from our merges file:
    vocab.json in CLIP's id order and merges.txt with HF's header line."""
    transformers = pytest.importorskip("transformers")
    lines = gzip.decompress(vocab_path.read_bytes()).decode("utf-8").split("\n")[1:N_MERGES + 1]
    (tmp_path / "vocab.json").write_text(json.dumps(_vocab_from_merges(lines)), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return transformers.CLIPTokenizer.from_pretrained(str(tmp_path))


def _vocab_from_merges(lines: list[str]) -> dict[str, int]:
    """CLIP's vocabulary order, rebuilt here independently of vlrt's tables."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars = {b: chr(b) for b in printable}
    chars.update({b: chr(256 + n) for n, b in enumerate(b for b in range(256) if b not in chars)})
    tokens = [*chars.values(), *(c + "</w>" for c in chars.values()),
              *(line.replace(" ", "") for line in lines), "<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


# Inputs on which HF and CLIP agree by design. Left out, for known reasons (each pinned to CLIP's
# ids in test_clip_specific_behaviour or test_cleaning_matches_clean_text):
# - HTML entities: HF does no html.unescape.
# - anything ftfy repairs (mojibake, curly quotes, ligatures, full-width forms, control characters):
#   HF normalizes with NFC only.
# - "<|ENDOFTEXT|>" in capitals: HF matches special tokens case-sensitively before lowercasing;
#   CLIP lowercases first, so it becomes EOT.
# - a special token right after punctuation ("x!<|endoftext|>"): HF cuts special tokens out
#   before pre-tokenizing; in CLIP's regex the punctuation run "!<|" swallows the "<|".
AGREED = [
    "a photo of a cat",
    "A Photo Of A Cat",
    "Hello, World!!! How are you?",
    "123 4567 3.14159 1,000,000 $5.99 50%",
    "don't you're we've I'm they'll she'd it's",
    "DON'T SHE'LL O'Neill's rock'n'roll",
    "'s's 'd'd ''",
    "café naïve résumé façade",
    "cafe\u0301 (decomposed accent)",
    "straße ß İstanbul",
    "😀🎉 emoji 👍🏽 skin tone 👨‍👩‍👧 family",
    "日本語のテキスト 中文 한국어",
    "Привет мир Ελληνικά العربية עברית हिन्दी",
    "a <|endoftext|> b",
    "<|startoftext|>hi there<|endoftext|>",
    "supercalifragilisticexpialidocious" * 3,
    "x" * 300,
    "pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
    "e-mail: someone@example.com, url: https://example.org/a?b=c&d=e",
    "tab\tnew\nline\r\nspaces    many",
    "   leading and trailing   ",
    "",
    "#hashtag @mention snake_case camelCase kebab-case",
    "(parens) [brackets] {braces} <angles> |pipes| \\back\\slash/",
    "~!@#$%^&*()_+-=`",
    "wow!!!! ?!?! ... --- ***",
    "a man is playing a guitar on stage while people dance",
    "The QUICK brown fox jumps over the lazy dog 42 times",
    "mixed123numbers456and789letters",
    "ñandú pingüino ångström",
]


def test_matches_hugging_face_clip_tokenizer(tok, tmp_path):
    hf = hf_clip_tokenizer(tmp_path, tok.vocab_path)
    for text in AGREED:
        assert tok.encode(text) == hf.encode(text, add_special_tokens=False), text


@pytest.mark.parametrize(("text", "ids"), [
    ("a <|endoftext|> b", [320, 49407, 321]),
    ("<|ENDOFTEXT|>", [49407]),  # lowercased before the special-token match
    ("x!<|endoftext|>", [343, 0, 27, 347, 40786, 4160, 91, 285]),  # "!<|" is one punctuation run
    ("&amp;amp;", [261]),  # "&" after two rounds of unescaping
])
def test_clip_specific_behaviour(tok, text, ids):
    assert tok.encode(text) == ids


@pytest.mark.parametrize("text", [
    "a photo of a cat",
    "a man is playing a guitar on stage while people dance",
    "café naïve résumé",
    "привет мир",
    "日本語のテキスト",
    "😀 emoji",
    "what ?!",
    "supercalifragilisticexpialidocious" * 3,
])
def test_decode_round_trips_clean_text(tok, text):
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok(text, context_length=77)[0]) == text  # SOT, EOT and padding dropped


def test_decode_keeps_bang_token_that_shares_the_pad_id(tok):
    # id 0 is "!" inside a word as well as the pad; only trailing zeros are padding.
    assert tok.decode([SOT, 0, 256, EOT, 0, 0]) == "!!"


def test_decode_rejects_unknown_ids(tok):
    with pytest.raises(VlrtError, match="49408"):
        tok.decode([320, 49408])


def test_altered_vocab_is_refused_naming_file_and_hashes(tmp_path):
    altered = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    shutil.copyfile(BUNDLED_VOCAB, altered)
    with altered.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(VlrtError) as err:
        ClipTokenizer(altered)
    message = str(err.value)
    assert str(altered) in message and VOCAB_SHA256 in message
    assert hashlib.sha256(altered.read_bytes()).hexdigest() in message


def test_missing_vocab_is_a_vlrt_error(tmp_path):
    with pytest.raises(VlrtError, match="nope.txt.gz"):
        ClipTokenizer(tmp_path / "nope.txt.gz")


def test_non_string_text_is_a_vlrt_error(tok):
    with pytest.raises(VlrtError, match="string"):
        tok([b"bytes"], context_length=77)


def test_module_does_not_import_torch():
    code = "import sys; import vlrt.runtime.tokenizer; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
