"""Package list only (everything else is in pyproject.toml): `vidm` and its subpackages, plus the
checkout's kernels/ and train/ folders installed as `vidm.kernels` and `vidm.train`. Nothing but
`vidm` lands at the top level of site-packages, so a `kernels` or `train` of another distribution
can neither shadow vidm's nor be shadowed (README "Layout"; tests/test_structure.py)."""

from setuptools import find_namespace_packages, setup

# Folders of the checkout that install inside `vidm` under another name. Flat: no subpackages
# (tests/test_structure.py checks that, and that the built wheel has them).
MAPPED = {"vidm.kernels": "kernels", "vidm.train": "train"}

setup(
    packages=find_namespace_packages(include=["vidm", "vidm.*"], exclude=["*.__pycache__"]) + sorted(MAPPED),
    package_dir=MAPPED,
)
