"""The Sora door's services, one module each: `base` (the `Service` interface, `test` and `dump`), `koe` (local
transcription on the voice engine) and `relay` (a remote Realtime transcription session)."""
