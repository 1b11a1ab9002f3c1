from pbxlink.cli import main

raise SystemExit(main())
