from bufferanytime.cli.main import entry

raise SystemExit(entry())
