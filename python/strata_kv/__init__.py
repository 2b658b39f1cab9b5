"""strata-kv: the Python client of Strata, a distributed store for LLM KV-cache blocks.

    from strata_kv import StrataStore
    with StrataStore(node="127.0.0.1:7400") as store:
        store.put_from([key], [array])
        store.get_into([key], [out])

See docs/client.md ("Python") and README.md of the Strata repository.
"""

from .keys import Layout, hash_prefix, key_from_string, lmcache_key, sglang_page_key, vllm_block_key
from .store import Completion, LookupResult, StrataError, StrataStore

__all__ = [
    "StrataStore", "StrataError", "LookupResult", "Completion", "Layout", "hash_prefix", "vllm_block_key",
    "sglang_page_key", "lmcache_key", "key_from_string",
]
__version__ = "0.1.0"
