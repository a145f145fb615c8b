"""Report writers of the gate; generated reports go under reports/out/ (git-ignored)."""
