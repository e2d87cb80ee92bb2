"""Built-in adapters, one subpackage each. They are found through the ``mixerd.adapters`` entry
points like any third-party adapter, never imported by name from the runtime."""
