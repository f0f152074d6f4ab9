from rustymt.cli import main

raise SystemExit(main())
