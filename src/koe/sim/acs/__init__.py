"""The ACS side of a call, simulated: media streaming to any transport URL (`media.MediaStream`), the callers' audio
(`participants`), ACS's playout of the server's audio (`playback`), and Call Automation (`callautomation`): REST,
Event Grid and CloudEvents callbacks, so official SDK code runs against it unmodified. `koe acs-call` (`cli`) is
the command-line front end."""
