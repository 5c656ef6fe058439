"""SQL plumbing shared by the directory and the ledger: tables, engines, migrations."""
