"""The engine tests' node: a real `strata serve` on a free loopback port (strata_kv.local's
LocalNode, with the node's default block limit), and what the tests read from its admin API.

The binary is $STRATA_BIN (scripts/test-engines.sh sets it to the debug build it makes), else the
checkout's build.
"""

from __future__ import annotations

from strata_kv.local import LocalNode


class StrataNode(LocalNode):
    """One node: a RAM tier and a small NVMe tier under a temporary data folder (``remove`` stops it
    and deletes the folder)."""

    def __init__(self, ram: str = "512MiB", nvme: str = "1GiB", fault_injection: bool = False,
                 ram_only: bool = False) -> None:
        super().__init__(
            ram=ram, nvme=nvme, max_block_size=None,
            # --fault-injection: flip_bit works.
            extra=["--fault-injection"] if fault_injection else [],
            # nvme.admission: never: no copy written behind to disk.
            config="nvme:\n  admission: never\n" if ram_only else "",
        )

    def flip_bit(self, key: bytes) -> None:
        """Flips one bit of the block's RAM copy, its stored checksum unchanged (a memory fault):
        the node then answers a read of it as corrupt. Needs fault_injection."""
        self.admin_post("/v1/debug/flip-bit", {"key": key.hex()})

    def blocks_stored(self) -> int:
        """Distinct blocks the node holds. Write-behind keeps a block in RAM after writing it to
        NVMe, so it is counted in both tiers' `strata_tier_blocks`: each tier's count is a lower
        bound on the distinct blocks (RAM's is exact until RAM evicts, NVMe's once written behind),
        and the larger of the two is what the node holds in these tests."""
        m = self.metrics()

        def tier(name: str) -> int:
            return int(sum(v for k, v in m.items() if k.startswith(f'strata_tier_blocks{{tier="{name}"')))

        return max(tier("ram"), tier("nvme"))

    def bytes_served(self) -> int:
        """Payload bytes the node sent for GETs, over every transport."""
        return int(sum(v for k, v in self.metrics().items() if k.startswith('strata_transfer_bytes_total{op="get"')))
