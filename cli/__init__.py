"""The `canaryctl` command: thin typed functions over the other packages."""
