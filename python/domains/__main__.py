"""`python -m domains {image,pde,lp,lm,all} [options]`: train each domain's implicit model at
a small depth, then write quality and Lipschitz vs test-time iterations (table + PNG).
Bad input (an unknown config, a device this machine lacks, a value out of range, unreadable
data or an output folder that cannot be written) prints `error: <message>` and exits 2,
without a traceback, before any domain is trained. Ctrl-C exits 130."""
import argparse

from cli_safety.devices import parse_device
from cli_safety.exits import run_cli
from cli_safety.output_paths import check_output_dir, check_output_file
from cli_safety.values import SEED
from domains import DOMAIN_MODULES
from domains.domain import RUN_RANGES, get_config
from domains.harness import load_domain, run_domain
from domains.report import report_paths


def main(argv=None):
    run_cli(lambda: _main(argv))


def _main(argv=None):
    p = argparse.ArgumentParser(prog="python -m domains", description=__doc__)
    p.add_argument("domain", choices=sorted(DOMAIN_MODULES) + ["all"])
    p.add_argument("--config", default="small", help="small (2-core CPU, minutes) or gpu")
    p.add_argument("--out", default="runs/domains", help="folder for {domain}.md/.json/.png")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if present)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--train-steps", type=RUN_RANGES["train_steps"], default=None)
    p.add_argument("--train-iters", type=RUN_RANGES["train_iters"], default=None)
    p.add_argument("--eval-max-iters", type=RUN_RANGES["eval_max_iters"], default=None)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    names = sorted(DOMAIN_MODULES) if args.domain == "all" else [args.domain]
    # Everything refusable is refused here, before minutes of data making and training.
    device = parse_device(args.device) if args.device is not None else None
    for name in names:
        get_config(load_domain(name), args.config)
    check_output_dir(args.out, "--out")
    for name in names:
        for path in report_paths(args.out, name).values():
            check_output_file(path, "--out")
    for name in names:
        result = run_domain(name, config=args.config, out_dir=args.out, device=device,
                            seed=args.seed, progress=not args.no_progress,
                            train_steps=args.train_steps, train_iters=args.train_iters,
                            eval_max_iters=args.eval_max_iters)
        with open(result["paths"]["table"]) as fh:
            print(fh.read())
        print(f"wrote {', '.join(result['paths'].values())}\n")


if __name__ == "__main__":
    main()
