"""Python-based Triton backends copied into the embedded Triton's backend directory."""
