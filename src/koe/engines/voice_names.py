"""Voice names as clients send them, mapped to installed voices: call `choose_voice(tts, name, language)`.

Clients name voices in three ways, and each door passes what it receives here:
- an installed voice (`jf_alpha`, `en_US-joe-medium`): that voice;
- an Azure voice, as Voice Live takes them (`ja-JP-NanamiNeural`, `zh-CN-YunxiNeural`,
  `en-US-Ava:DragonHDLatestNeural`): the nearest installed voice of the name's language, of the speaker's gender
  when the name tells it (the table below; Chinese speakers named Xiao…/Hsiao… are women, Yun… men). Kokoro's
  Chinese voices are named after Azure speakers, so `zh-CN-XiaoxiaoNeural` is `zf_xiaoxiao` itself. A
  multilingual Azure voice (`…Multilingual…`, `:DragonHD…`) speaks the session's language when one is given, as
  it would on Azure; any other speaks its own name's language, whatever the session's;
- one of OpenAI's voices (`alloy`, `marin`, …), or any other name: the voice for the session's language
  (`TTS.voice_for`), or the default voice when the session names no language.
`VoiceChoice.note` says why the voice differs from the one asked for, for the door's warning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from koe.engines.base import TTS, Gender
from koe.languages import UnsupportedLanguage, parse_language

OPENAI_VOICES = frozenset("alloy ash ballad coral echo fable nova onyx sage shimmer verse marin cedar".split())

_FEMALE = """
    ja: Nanami Aoi Mayu Shiori
    zh: Xiaoxiao Xiaoyi Xiaochen Xiaohan Xiaomeng Xiaomo Xiaoqiu Xiaorui Xiaoshuang Xiaoxuan Xiaoyan Xiaoyou
        Xiaozhen Xiaobei Xiaoni Xiaoyu HsiaoChen HsiaoYu HiuMaan HiuGaai
    en: Ava Emma Jenny Aria Jane Sara Nancy Amber Ana Ashley Cora Elizabeth Michelle Monica Serena Phoebe Evelyn
        Sonia Libby Abbi Bella Hollie Maisie Olivia Ada Natasha Clara Nova Shimmer
"""
_MALE = """
    ja: Keita Daichi Naoki Masaru
    zh: Yunxi Yunjian Yunyang Yunfeng Yunhao Yunxia Yunye Yunze Yunjie Yunyi Yunfan Yunxiao YunJhe WanLung
    en: Andrew Brian Guy Davis Jason Tony Brandon Christopher Eric Jacob Roger Steffan Adam Dustin Kai
        Ryan Alfie Elliot Ethan Noah Oliver Thomas Ollie William Liam Echo Fable Onyx
"""


def _speakers(table: str) -> frozenset[str]:
    return frozenset(name.lower() for name in table.split() if not name.endswith(":"))


_GENDERS: dict[Gender, frozenset[str]] = {"female": _speakers(_FEMALE), "male": _speakers(_MALE)}
_AZURE = re.compile(
    r"^(?P<locale>[a-z]{2,3}-[A-Z][A-Za-z]{1,3}|[a-z]{2,3}-\d{3})-(?:(?P<dialect>[a-z]+)-)?"
    r"(?P<speaker>[A-Z][A-Za-z0-9]*?)(?:(?P<turbo>Turbo)?(?P<multi>Multilingual))?"
    r"(?::(?P<hd>DragonHD[A-Za-z]*))?Neural$"
)


@dataclass(frozen=True, slots=True)
class AzureVoice:
    """An Azure neural voice's name, taken apart."""

    name: str
    language: str
    """Whisper's code of its locale's language (`ja` for ja-JP)."""
    speaker: str
    gender: Gender | None
    multilingual: bool


def azure_voice(name: str) -> AzureVoice | None:
    """`name` taken apart when it is an Azure neural voice's name, else None."""
    match = _AZURE.match(name.strip())
    if match is None:
        return None
    try:
        language = parse_language(match.group("locale")).code
    except UnsupportedLanguage:
        return None
    speaker = match.group("speaker")
    gender = next((g for g, names in _GENDERS.items() if speaker.lower() in names), None)
    if gender is None and language == "zh":
        gender = "female" if speaker.startswith(("Xiao", "Hsiao")) else "male" if speaker.startswith("Yun") else None
    multilingual = bool(match.group("multi") or match.group("hd"))
    return AzureVoice(name, language, speaker, gender, multilingual)


@dataclass(frozen=True, slots=True)
class VoiceChoice:
    voice: str
    """The installed voice to speak with."""
    requested: str
    exact: bool
    """Whether `voice` is the voice asked for (an installed name, or an Azure speaker installed under its own name)."""
    note: str | None = None
    """Why another voice was chosen, when it was not obvious (an unknown name, a language with no voice)."""


def _code(language: str | None) -> str | None:
    if not language:
        return None
    try:
        return parse_language(language).code
    except UnsupportedLanguage:
        return None


def _default(tts: TTS, language: str | None) -> str:
    code = _code(language)
    return (tts.voice_for(code) if code else None) or tts.default_voice


def _nearest(tts: TTS, azure: AzureVoice, language: str) -> tuple[str, bool] | None:
    """The installed voice of `language` nearest to an Azure speaker, and whether it is that speaker: itself
    (Kokoro's Chinese voices bear Azure speakers' names), else the configured voice when its gender fits, else
    one of the same gender, else the configured voice."""
    if language == azure.language == "zh" and azure.gender is not None:
        own = f"z{azure.gender[0]}_{azure.speaker.lower()}"
        if tts.has_voice(own):
            return own, True
    configured = tts.voice_for(language)
    if configured is None:
        return None
    if azure.gender is None or tts.voice_info(configured).gender in (azure.gender, None):
        return configured, False
    same = [name for name in tts.voices() if _matches(tts, name, language, azure.gender)]
    return (same[0] if same else configured), False


def _matches(tts: TTS, name: str, language: str, gender: Gender) -> bool:
    info = tts.voice_info(name)
    return info.language == language and info.gender == gender and ":" not in name


def choose_voice(tts: TTS, requested: str | None, language: str | None = None) -> VoiceChoice:
    """The installed voice for a voice name a client sent, in a session of `language` (a BCP-47 tag or Whisper
    code; None when the session names none)."""
    name = (requested or "").strip()
    if name and tts.has_voice(name):
        return VoiceChoice(name, name, True)
    if not name or name.lower() in OPENAI_VOICES:
        return VoiceChoice(_default(tts, language), name, False)
    azure = azure_voice(name)
    if azure is None:
        fallback = _default(tts, language)
        return VoiceChoice(fallback, name, False, f"voice {name!r} is not installed here; using {fallback!r}")
    session = _code(language)
    wanted = session if azure.multilingual and session else azure.language
    nearest = _nearest(tts, azure, wanted)
    if nearest is None:
        fallback = _default(tts, language)
        note = f"no installed voice speaks {wanted!r} (asked for {name!r}); using {fallback!r}"
        return VoiceChoice(fallback, name, False, note)
    return VoiceChoice(nearest[0], name, nearest[1])
