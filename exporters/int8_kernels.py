"""Which CPUs run an onnxruntime INT8 bundle exactly, and how the fused kernels here compare with
the exact Q/DQ semantics: the record ``doctor`` holds a device's agreement to."""

from __future__ import annotations

from pathlib import Path

from exporters import qdq, saturation
from exporters.session import ExportSession
from exporters.verify import compare, ort_runner
from runtime.cpu import cpu_info


def int8_kernels_record(session: ExportSession, model: Path) -> dict:
    """Bound every conv's worst 16-bit pair sum (which CPUs run the bundle exactly) and measure
    the fused integer kernels against the exact Q/DQ semantics here, on kernels that compute the
    sums exactly: the agreement ``doctor`` expects on a device when nothing is wrong."""
    record = saturation.kernel_record(model, qdq.CPU_WEIGHT_BITS)
    cpu = cpu_info()
    items = session.validation.items if session.validation is not None else session.fp32.items
    fused, exact = ort_runner(model), ort_runner(model, exact=True)
    per_image = [compare([exact(i.array)], [fused(i.array)]).argmax_agreement for i in items]
    agreement = sum(per_image) / len(per_image)
    kernels_exact = record["runs_exactly_on"] == saturation.ANYWHERE or cpu.int8_pairs_saturate is False
    # The lowest image, not only the mean: doctor runs fewer images, and a model with many near-tied
    # pixels varies from image to image (the tiny test model: 0.97 to 1.0 around 0.99).
    record["fused_vs_exact"] = {"agreement": round(agreement, 5), "lowest_image": round(min(per_image), 5),
                                "images": len(items), "cpu": cpu.model, "kernels_exact": kernels_exact}
    where = "every CPU" if record["runs_exactly_on"] == saturation.ANYWHERE else "VNNI CPUs only"
    session.req.log(f"    int8 kernels: worst pair sum {record['worst_pair_sum']} (int16 holds "
                    f"{saturation.INT16_MAX}) over {record['gemm_convs']} convs: exact on {where}; fused kernels "
                    f"vs exact Q/DQ semantics here: mask agreement {agreement:.5f} (lowest image {min(per_image):.5f})")
    return record
