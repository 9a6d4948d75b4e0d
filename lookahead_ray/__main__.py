from lookahead_ray.cli import main

raise SystemExit(main())
