from superconv.cli import main

raise SystemExit(main())
