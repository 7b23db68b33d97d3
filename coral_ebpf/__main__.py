from coral_ebpf.cli import main

raise SystemExit(main())
