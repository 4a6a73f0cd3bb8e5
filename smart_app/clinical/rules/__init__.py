"""One module per clinical rule (R1-R6 of docs/clinical-rules.md), each quoting its source at the top."""
