"""How BCC's captured output is boiled down to the reason a program was refused."""

from __future__ import annotations

from coral_ebpf.probes.runtime import compiler_warnings, split_bcc_output
from coral_ebpf.probes.verifier import kernel_verdict

VERIFIER_LOG = """\
bpf: Failed to load program: Permission denied
reg type unsupported for arg#0 function red_pipe_read#153
0: R1=ctx(off=0,imm=0) R10=fp0
; u32 next = s->pos[k];
138: (61) r3 = *(u32 *)(r7 +0)
 R0=inv(id=0) R1_w=inv(id=0,umax_value=626,var_off=(0x0; 0x272))
invalid access to map value, value_size=1216 off=1216 size=4
R7 min value is outside of the allowed memory range
processed 47012 insns (limit 1000000) max_states_per_insn 6 total_states 662 peak_states 647 mark_read 362
"""

JUMPS_LOG = """\
722: (3d) if r9 >= r1 goto pc-593
The sequence of 8193 jumps is too complex.
processed 120357 insns (limit 1000000) max_states_per_insn 6 total_states 1407 peak_states 1397 mark_read 363
"""

CLANG_LOG = """\
/virtual/main.c:3:33: error: use of undeclared identifier 'undeclared_name'
int broken(void *ctx) { return undeclared_name; }
                                ^
1 error generated.
"""


def test_the_verifier_reason_before_its_summary() -> None:
    assert kernel_verdict(VERIFIER_LOG) == (
        "the verifier",
        "invalid access to map value, value_size=1216 off=1216 size=4 / "
        "R7 min value is outside of the allowed memory range",
    )


def test_a_one_line_reason() -> None:
    assert kernel_verdict(JUMPS_LOG) == ("the verifier", "The sequence of 8193 jumps is too complex.")


def test_clang_errors() -> None:
    who, what = kernel_verdict(CLANG_LOG)
    assert who == "clang" and "undeclared identifier 'undeclared_name'" in what


def test_nothing_to_say() -> None:
    assert kernel_verdict("") == ("", "")


NOCF_WARNING = (
    "In file included from /virtual/main.c:2:\n"
    "include/linux/compiler_types.h:123:35: warning: 'nocf_check' attribute ignored; use -fcf-protection to "
    "enable the attribute [-Wignored-attributes]\n"
    "  123 | #define __nocfi_ptr __attribute__((nocf_check))\n"
    "      |                                   ^\n"
    "1 warning generated.\n"
)


def test_the_agents_lines_are_told_from_compiler_output() -> None:
    agent_line = 'ts=2026-12-07T18:00:00.000Z level=info logger=x msg="other thread"\n'
    json_line = '{"ts": "2026-12-07T18:00:00.000Z", "level": "info"}\n'
    agent, compiler = split_bcc_output(NOCF_WARNING + agent_line + json_line)
    assert agent == agent_line + json_line
    assert compiler == NOCF_WARNING
    assert compiler_warnings(compiler) == [
        "'nocf_check' attribute ignored; use -fcf-protection to enable the attribute [-Wignored-attributes]"
    ]
    assert split_bcc_output("") == ("", "")
