"""latticeflow: symmetry-respecting normalizing flows for lattice field theory.

Sample φ⁴, U(1) and SU(N) lattice theories with flows that respect their symmetries,
make every flow ensemble exact (Metropolis independence or reweighting), and compare
against HMC with Γ-method error bars.  Conventions: ``docs/conventions.md``.
"""

__version__ = "0.1.0"

from .errors import LatticeflowError, ConfigError  # noqa: E402

__all__ = ["__version__", "LatticeflowError", "ConfigError", "train", "load_flow", "sample", "hmc",
           "analyze"]


# torch-heavy modules are imported on first use, so `import latticeflow` stays light
def train(config_or_path, out=None, steps=None, resume=False, progress=True):
    """Train a model's flow by reverse KL; see :func:`latticeflow.training.train`."""
    from .training import train as _train

    return _train(config_or_path, out=out, steps=steps, resume=resume, progress=progress)


def load_flow(source, config=None):
    """Load trained weights into a flow; see :func:`latticeflow.training.load_flow`."""
    from .training import load_flow as _load_flow

    return _load_flow(source, config)


def sample(source, n, out=None, iid=False, chains=None, seed=None, configs=True, progress=True):
    """Exact flow ensemble (Metropolis, or i.i.d. with weights); see :func:`latticeflow.cli.commands.sample`."""
    from .cli.commands import sample as _sample

    return _sample(source, n, out, iid, chains, seed, configs, progress)


def hmc(config, n, out=None, chains=None, seed=None, configs=True, progress=True):
    """HMC ensemble for a model or study file; see :func:`latticeflow.cli.commands.hmc`."""
    from .cli.commands import hmc as _hmc

    return _hmc(config, n, out, chains, seed, configs, progress)


def analyze(path):
    """Means, errors, τ_int, acceptance, ESS of an ensemble file (the ``analyze --json`` object)."""
    from .cli.commands import analyze as _analyze

    return _analyze(path)
