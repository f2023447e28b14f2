"""Model architectures and families (``bert``), the operator kinds (``kinds``), resolution
and the operator workload. Importing the package loads neither module: ``kinds`` is read by
code that must not wait for torch (the CLI's option lists)."""
