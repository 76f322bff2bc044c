"""`python -m domains {image,pde,lp,lm,all} [options]`: train each domain's implicit model at
a small depth, then write quality and Lipschitz vs test-time iterations (table + PNG).
Bad input (an unknown config, unreadable data or output folder) prints `error: <message>`
and exits 2, without a traceback."""
import argparse
import sys

from domains import DOMAIN_MODULES
from domains.harness import run_domain


def main(argv=None):
    try:
        _main(argv)
    except (ValueError, OSError) as e:
        msg = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and getattr(e, "filename", None) else e
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)


def _main(argv=None):
    p = argparse.ArgumentParser(prog="python -m domains", description=__doc__)
    p.add_argument("domain", choices=sorted(DOMAIN_MODULES) + ["all"])
    p.add_argument("--config", default="small", help="small (2-core CPU, minutes) or gpu")
    p.add_argument("--out", default="runs/domains", help="folder for {domain}.md/.json/.png")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if present)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--train-iters", type=int, default=None)
    p.add_argument("--eval-max-iters", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    names = sorted(DOMAIN_MODULES) if args.domain == "all" else [args.domain]
    for name in names:
        result = run_domain(name, config=args.config, out_dir=args.out, device=args.device,
                            seed=args.seed, progress=not args.no_progress,
                            train_steps=args.train_steps, train_iters=args.train_iters,
                            eval_max_iters=args.eval_max_iters)
        with open(result["paths"]["table"]) as fh:
            print(fh.read())
        print(f"wrote {', '.join(result['paths'].values())}\n")


if __name__ == "__main__":
    main()
