"""The package version, in a module of its own: the engine and the faces read it without
importing the package's public names (dataguard/__init__.py imports the Workspace)."""
__version__ = "0.3.0"
