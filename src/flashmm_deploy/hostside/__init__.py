"""What runs on a target host, standard library only (plus cryptography for record_keys):
shipped as module_utils/flashmm_*.py; imports only itself and redis/."""
