"""Languages as koe's users name them and as its models need them: call `parse_language(tag)` first.

Clients name languages with BCP-47 tags (`ja-JP`, `zh-CN`, `zh-TW`, `en-US`, `cmn-Hans-CN`; Sora passes one in
every request, Call Automation a locale, Realtime an ISO 639-1 code). Whisper knows its own codes (`ja`, `zh`,
`en`, …), and Chinese comes in two scripts, which Whisper mixes freely: the tag decides which one the caller reads.
`parse_language()` turns a tag into a `Language` (the tag as given, Whisper's code, and for Chinese the script), or
raises `UnsupportedLanguage` naming what was wrong; `client_language()` is how every door reads the language its
client named (a tag, `auto`, or Voice Live's comma-separated list). `AUTO` asks for detection per utterance.
`script_language()` guesses Japanese or Chinese from a text's script, for speech whose language nobody named.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

AUTO = "auto"
"""Detect the language of each utterance (multilingual Whisper only)."""

Script = Literal["Hans", "Hant"]

# Whisper's languages by code, named as OpenAI's verbose_json names them.
WHISPER_LANGUAGES: dict[str, str] = dict(
    pair.split(":")
    for pair in (
        "en:english zh:chinese de:german es:spanish ru:russian ko:korean fr:french ja:japanese pt:portuguese "
        "tr:turkish pl:polish ca:catalan nl:dutch ar:arabic sv:swedish it:italian id:indonesian hi:hindi "
        "fi:finnish vi:vietnamese he:hebrew uk:ukrainian el:greek ms:malay cs:czech ro:romanian da:danish "
        "hu:hungarian ta:tamil no:norwegian th:thai ur:urdu hr:croatian bg:bulgarian lt:lithuanian la:latin "
        "mi:maori ml:malayalam cy:welsh sk:slovak te:telugu fa:persian lv:latvian bn:bengali sr:serbian "
        "az:azerbaijani sl:slovenian kn:kannada et:estonian mk:macedonian br:breton eu:basque is:icelandic "
        "hy:armenian ne:nepali mn:mongolian bs:bosnian kk:kazakh sq:albanian sw:swahili gl:galician "
        "mr:marathi pa:punjabi si:sinhala km:khmer sn:shona yo:yoruba so:somali af:afrikaans oc:occitan "
        "ka:georgian be:belarusian tg:tajik sd:sindhi gu:gujarati am:amharic yi:yiddish lo:lao uz:uzbek "
        "fo:faroese ht:haitian_creole ps:pashto tk:turkmen nn:nynorsk mt:maltese sa:sanskrit lb:luxembourgish "
        "my:myanmar bo:tibetan tl:tagalog mg:malagasy as:assamese tt:tatar haw:hawaiian ln:lingala ha:hausa "
        "ba:bashkir jw:javanese su:sundanese yue:cantonese"
    ).split()
)

_ALIASES = {"cmn": "zh", "zho": "zh", "chi": "zh", "iw": "he", "jv": "jw", "jpn": "ja", "eng": "en", "kor": "ko"}
"""Other names for Whisper's codes: ISO 639-3 and legacy ones that BCP-47 tags and locales use."""
_TRADITIONAL_REGIONS = frozenset({"TW", "HK", "MO"})
"""Regions whose Chinese is written in traditional characters when a tag names no script."""


class UnsupportedLanguage(ValueError):
    """A language tag koe cannot hear; the message names the tag and why."""


@dataclass(frozen=True, slots=True)
class Language:
    tag: str
    """The tag as the client gave it (`ja-JP`), for results that echo it."""
    code: str
    """Whisper's code (`ja`)."""
    script: Script | None = None
    """For Chinese: the script results are written in (`Hans` simplified, `Hant` traditional)."""

    @property
    def name(self) -> str:
        return language_name(self.code)

    @property
    def region(self) -> str:
        """The tag's region (`TW` in `zh-Hant-TW`), upper case; "" when it names none."""
        return _subtags(self.tag)[2]


def parse_language(tag: str) -> Language:
    """The language a BCP-47 tag (or a bare Whisper code) names. `zh` without a script or region is simplified."""
    text = tag.strip()
    primary, script, region = _subtags(text)
    if not primary:
        raise UnsupportedLanguage("the language tag is empty")
    code = _ALIASES.get(primary, primary)
    if code not in WHISPER_LANGUAGES:
        raise UnsupportedLanguage(f"koe cannot transcribe the language {tag!r} (no such Whisper language: {code!r})")
    if code in ("zh", "yue") and script is None:
        script = "Hant" if region in _TRADITIONAL_REGIONS or code == "yue" else "Hans"
    return Language(text, code, script if code in ("zh", "yue") else None)


def requested_language(tag: str | Language | None) -> Language | None:
    """What a request asks for: a `Language`, or None for `auto` (detect it per utterance) or no tag at all.
    `UnsupportedLanguage` for a tag that names no language."""
    if tag is None or isinstance(tag, Language):
        return tag
    return None if tag.strip().lower() == AUTO else parse_language(tag)


def client_language(value: str | None) -> str | None:
    """The language a door's client named, in its protocol's form, as koe's sessions take it; every door calls this.

    None or "" names none (the configured `stt.language` applies); `auto` asks for detection; a tag or code is
    checked and kept as given (`ja-JP`: results echo it, the STT maps it). A comma-separated list, Voice Live's
    multi-language form (`en,zh`, `en-US,ja-JP`), is its one language, or `auto` when it names several: Whisper
    detects the language of each utterance (among `stt.auto_languages` when that is set). `UnsupportedLanguage`
    names the first entry that is no language."""
    if value is None or not value.strip():
        return None
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    if not entries:
        raise UnsupportedLanguage(f"the language list {value!r} names no language")
    codes = {AUTO if entry.lower() == AUTO else parse_language(entry).code for entry in entries}
    return entries[0] if len(codes) == 1 else AUTO


def _subtags(text: str) -> tuple[str, Script | None, str]:
    """A tag's primary language (lower case), script (`Hans`/`Hant`, else None) and region (upper case, or "")."""
    parts = [part for part in text.replace("_", "-").split("-") if part]
    if not parts:
        return "", None, ""
    primary = parts[0].lower()
    script: Script | None = None
    region = ""
    for part in parts[1:]:
        if len(part) == 4 and part.isalpha():
            titled = part.title()
            if titled in ("Hans", "Hant"):
                script = titled  # type: ignore[assignment]  # one of the two literals, checked just above
        elif (len(part) == 2 and part.isalpha()) or (len(part) == 3 and part.isdigit()):
            region = part.upper()
    if primary == "zh" and parts[1:2] and parts[1].lower() in ("yue", "hk-yue"):
        primary = "yue"
    return primary, script, region


def language_name(code: str) -> str:
    """A Whisper code's English name, as OpenAI's verbose_json writes it (`haitian creole`); unknown codes as given."""
    return WHISPER_LANGUAGES.get(code, code).replace("_", " ")


_KANA = re.compile("[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def script_language(text: str) -> str | None:
    """A guess from the script alone: `ja` for text with kana, `zh` for Chinese characters without kana, None for
    neither (Japanese written only in kanji reads as Chinese)."""
    if _KANA.search(text):
        return "ja"
    if _HAN.search(text):
        return "zh"
    return None


# --- text in the languages that write no spaces ---------------------------------------------------------------

_CJK = (
    "\u3000-\u303f"  # CJK punctuation (、。「」)
    "\u3040-\u30ff"  # hiragana, katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs
    "\uff00-\uffef"  # full-width forms (，！？)
)
_CJK_GAP = re.compile(f"(?<=[{_CJK}])\\s+(?=[{_CJK}])")
_CJK_CHAR = re.compile(f"[{_CJK}]")
SENTENCE_END = ".?!…。？！．"
"""What ends a sentence, in Latin and full-width forms."""
CLAUSE_END = SENTENCE_END + ",;:、，；："


def has_cjk(text: str) -> bool:
    """Whether `text` holds Chinese or Japanese characters (or their punctuation)."""
    return _CJK_CHAR.search(text) is not None


def join_cjk(text: str) -> str:
    """`text` without the spaces a recogniser leaves between Chinese or Japanese characters (`今天 天气` → `今天天气`);
    spaces between Latin words and around them stay."""
    return _CJK_GAP.sub("", text.strip())


_HIRAGANA = re.compile("[\u3040-\u309f]")
_KANJI_OR_KATAKANA = re.compile("[\u30a0-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f]")


def soft_cut(text: str, limit: int) -> int:
    """Where to cut `text` no later than `limit` when no punctuation came: after a space, else (Japanese) where
    hiragana gives way to kanji or katakana, the usual start of a new phrase, else at the limit itself."""
    if space := text.rfind(" ", 0, limit) + 1:
        return space
    for index in range(limit, limit // 2, -1):
        if _HIRAGANA.match(text[index - 1]) and _KANJI_OR_KATAKANA.match(text[index]):
            return index
    return limit
