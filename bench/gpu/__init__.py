"""The GPU checks: the bundle of what the lent device lacks, its unpacking, ``checks.sh``."""
