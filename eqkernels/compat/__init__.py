"""Entry points compatible with other DEQ libraries, built on eqkernels' solvers.

    import eqkernels.compat.torchdeq as torchdeq     # instead of `import torchdeq`
"""
