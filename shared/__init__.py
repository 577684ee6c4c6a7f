"""What every mountworks worker shares: mount configuration, path confinement, runs and
commits, event parsing, the error tree and the runtime behind each handler and the CLI."""
