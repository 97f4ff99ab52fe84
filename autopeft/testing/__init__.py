"""Contract tests shipped with autopeft, for its own plugins and third-party ones."""
