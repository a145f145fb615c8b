"""The project's developer tools, run from a checkout and not shipped in the wheel: the seeded-defect
runner (`python -m tools.defects`), the benchmark (`python -m tools.bench`, `make bench`) and the
GitOps manifests' validator used by the project's tests (`tools.gitops`)."""
