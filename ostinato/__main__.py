from ostinato.cli import main

raise SystemExit(main())
