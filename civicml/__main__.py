from civicml.cli import main

raise SystemExit(main())
