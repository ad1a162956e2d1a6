from llama_wizard.tui.cli import main

raise SystemExit(main())
