"""telecorder's own store, as a conversion source and target."""
