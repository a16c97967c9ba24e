"""What people run: the `bledger` command line and the HTTP SDK."""
