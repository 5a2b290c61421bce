"""Model engines behind one small interface (`base.Engine`), and the factory that builds them from the registry."""
