from bufferanytime.cli.main import main

raise SystemExit(main())
