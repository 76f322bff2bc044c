"""Implicit models across four domains, sharing one training and test-time-scaling harness.

    python -m domains {image,pde,lp,lm,all} [--config small|gpu] [--out runs/domains]

Each domain module defines `DOMAIN`, an instance of a `domains.domain.Domain` subclass
(data generator, model, loss, metric); `harness`
trains it at a small depth and measures quality and the empirical Lipschitz constant of
the input -> output map against the number of test-time iterations.
"""
DOMAIN_MODULES = {
    "image": "domains.image",
    "pde": "domains.pde",
    "lp": "domains.lp",
    "lm": "domains.looped_lm",
}
