"""The kinds of case Math-Verify's own test suite checks (huggingface/Math-Verify, tests/), as a
table of our own: our data, our expected verdicts, and for every row where our verdict differs
from Math-Verify's a note: the policy we keep, or what we read that Math-Verify does not.

Each row: (topic, gold, completion, ours, math_verify, note). `ours` is the verdict's `correct`
(None: the sample is not judged). `math_verify` is Math-Verify 0.9.0's verdict on the same row,
read the way its tests read a pair (LaTeX and expression extraction, the box first, strict,
6-digit float rounding); `test_math_verify_column_is_what_math_verify_says` re-measures it when
`math-verify` is installed (`pip install -e '.[bench]'`).

The policies behind the notes (docs/verifiers-math.md):
- prose: only a box, an <answer> block or a `#### x` line is an answer; prose is not read.
- boxes: a completion that boxes different answers never pays; a gold with several different
  boxed answers is not judged (never summed, never guessed at).
- decimal comma: a comma separates list items (`0,375` is two numbers).
- groups, units: `4 000` is one number when it is the whole answer; currency signs and unit
  words around a number are dropped.
- tuple: a tuple is ordered and a bare list is not; neither equals the other.
- symmetric: a one-variable inequality is the set it describes, on the gold's side too.
Numbers are exact, a decimal approximating a non-terminating value to about 7 significant
digits; on these rows Math-Verify (rounding to 6 digits) agrees.
"""

from __future__ import annotations

import pytest

from reasoner.verifiers.math import MathVerifier

PROSE = "policy prose: the answer is only in the text"
BOXES = "policy boxes: the completion boxes different answers"
GOLD_BOXES = "policy boxes: the gold has several different boxed answers, so it is not judged"
COMMA = "policy decimal comma: the comma makes a list"
UNICODE = "reads: Unicode math symbols (², ³, ∞, √, ≠) as the LaTeX they stand for"
SPELLING = (r"reads: spellings the parser doesn't know (\not=, \lbrace, \langle, {:}, "
            r"\varnothing, \lor, \text{lcm}, \bmod)")

CASES: list[tuple[str, str, str, bool | None, bool, str]] = [
    # -- numbers, separators, currency, units
    ("negative", "-8", r"The result is \boxed{-8}.", True, True, ""),
    ("thousands", "3250000", r"\boxed{3,250,000}", True, True, ""),
    ("thousands by space", "4000", r"\boxed{4 000}", True, False,
     "policy groups: digits grouped by threes with spaces are one number, when that is the "
     "whole answer"),
    ("trailing .0", "3000", r"\boxed{3000.0}", True, True, ""),
    ("thousands and decimals", "2500.5", r"\boxed{2,500.5}", True, True, ""),
    ("decimal comma", "2500.75", r"\boxed{2500,75}", False, False, ""),
    ("decimal comma", "0,375", r"\boxed{0.375}", False, True, COMMA),
    ("leading point", "0.6", r"\boxed{.6}", True, True, ""),
    ("currency", "2500.75", r"\boxed{\$2,500.75}", True, True, ""),
    ("currency after", "2500.75", r"\boxed{2,500.75€}", True, False,
     "policy units: currency signs and unit words around a number are dropped"),
    ("unit", "2500.75", r"\boxed{2,500.75\text{ m}^2}", True, True, ""),
    ("digit among letters", "3", r"\boxed{QXR3B}", False, False, ""),
    ("number in prose", "2500.75", "so the total is 2,500.75 dollars", False, True, PROSE),
    ("final answer in prose", "34", "Final Answer: The largest $n$ is 34.", False, True, PROSE),
    ("display math, no box", "7", r"Answer \[ 7 \]", False, True, PROSE),
    ("box in display math", "7", r"Answer \[ \boxed{7} \]", True, True, ""),
    ("box in inline math", "7", r"Answer $\boxed{ 7 }$", True, True, ""),
    ("parenthesised sum", "12", r"\boxed{(7+5)}", True, True, ""),
    ("MATH digit groups", "21147.65", r"worth $\boxed{\$21,\!147.65}$ at the end.", True, True, ""),
    ("MATH digit groups", "22222222200", r"is $\boxed{22,\! 222,\! 222,\! 200}$", True, True, ""),
    ("MATH digit groups", "45678", r"is $\boxed{45,\! 678}$", True, True, ""),
    ("comma and space: a list", "45678", r"is $\boxed{45, 678}$", False, False, ""),
    ("unicode square unit", "4800.25", r"\boxed{4,800.25m²}", True, False, UNICODE),
    ("unicode square unit", "4800", r"\boxed{4,800.25 m²}", False, False, ""),
    ("unicode power", "y^3-2", r"\boxed{y³-2}", True, False, UNICODE),
    ("unicode power", "y^2-2", r"\boxed{y³-2}", False, False, ""),
    ("unicode infinity", r"(7, \infty)", r"\boxed{(7, ∞)}", True, False, UNICODE),
    ("unicode infinity", r"(-\infty, 7]", r"\boxed{(-∞, 7)}", False, False, ""),
    ("unicode root", r"3\sqrt{5}", r"\boxed{3√5}", True, False, UNICODE),
    ("unicode not-equal", r"x \neq 8", r"\boxed{x ≠ 8}", True, True, ""),
    # -- fractions and LaTeX spellings
    ("slash and frac", "11/7", r"\boxed{\frac{11}{7}}", True, True, ""),
    ("negative frac", "-11/7", r"\boxed{-\frac{11}{7}}", True, True, ""),
    ("frac without braces", "1/4", r"\boxed{\frac14}", True, True, ""),
    ("frac without braces", "1", r"\boxed{\frac5{5}}", True, True, ""),
    ("sqrt without braces", r"\sqrt{5}", r"\boxed{\sqrt5}", True, True, ""),
    ("cfrac", "1/4", r"\boxed{\cfrac{1}{4}}", True, True, ""),
    ("tfrac", "1/4", r"\boxed{\tfrac{1}{4}}", True, True, ""),
    ("left/right", "1/4", r"\boxed{\left( \frac{1}{4} \right)}", True, True, ""),
    ("text unit", "1/4", r"\boxed{\frac{1}{4} \text{meters}}", True, True, ""),
    ("textbf unit", "1/4", r"\boxed{\frac{1}{4} \textbf{meters}}", True, True, ""),
    ("name = value", "1/4", r"\boxed{k = \frac{1}{4}}", True, True, ""),
    ("text number", r"\text{17}", r"\boxed{17}", True, True, ""),
    # -- percent
    ("percent sign", r"35\%", r"\boxed{35 \%}", True, True, ""),
    ("percent word", r"35\%", r"\boxed{35 percent}", True, True, ""),
    ("pct", r"35\%", r"\boxed{35 pct}", True, True, ""),
    ("percentage", r"35\%", r"\boxed{35 percentage}", True, True, ""),
    ("percent after the box", r"35\%", r"$\boxed{35}$ pct", True, True, ""),
    # -- intervals and sets
    ("interval", "[0,5)", r"\boxed{[0,5)}", True, True, ""),
    ("interval end", "[0,8)", r"\boxed{[0,5)}", False, False, ""),
    ("interval brackets", "(0,8)", r"\boxed{[0,8)}", False, False, ""),
    ("number vs interval", "1", r"\boxed{-[0,1)}", False, False, ""),
    ("union with tfrac", r"[-2, -\frac{1}{3}) \cup (-\frac{1}{3}, 0) \cup (0, 2) \cup (2, \infty)",
     r"$\boxed{[-2, -\tfrac13) \cup (-\tfrac13, 0) \cup (0, 2) \cup (2, \infty)}.$", True, True,
     ""),
    ("point and interval", r"x \in \boxed{\{-2\} \cup [1,5)}.", r"x \in \boxed{\{-2\} \cup [1,5)}.",
     True, True, ""),
    ("domain with \\in", r"the domain is: \[ \boxed{(3, 9) \cup (9, 81)} \]",
     r"Thus $x \in \boxed{(3,9) \cup (9,81)}$", True, True, ""),
    ("plus infinity", r"(2, +\infty)", r"\boxed{(2, +\infty)}", True, True, ""),
    # -- worked solutions as gold, completions with working
    ("expression", "3-3q", r"Since $y = 3 - q$, we get $y-2q=\boxed{3-3q}$.", True, True, ""),
    ("matrix box in a gold", r"\boxed{\begin{pmatrix} 2 & 0 \\ 0 & -3 \end{pmatrix}}.",
     r"\boxed{\begin{pmatrix} 2 & 0 \\ 0 & -3 \end{pmatrix}}", True, True, ""),
    ("percent, gold a solution",
     r"It keeps $0.9 \cdot 0.7 = 63\%$ of its value, a loss of $\boxed{37\%}$.",
     r"So the total loss is $\boxed{37\%}$.", True, True, ""),
    ("{,} groups, gold a solution", r"The smallest such number is $\boxed{23{,}514}$.",
     r"so $N = \boxed{23{,}514}$", True, True, ""),
    ("{,} groups in prose", r"The smallest such number is $\boxed{23{,}514}$.",
     r"Final Answer: The final answer is $23 {, }514$.", False, True, PROSE),
    ("words split by $", r"between $\boxed{9\text{ and }10}$", r"between $\boxed{9 $ and $10 }$.",
     True, True, ""),
    ("polar point", r"(4, \frac{\pi}{3})",
     r"the polar coordinates are $\boxed{\left( 4, \frac{\pi}{3} \right)}.$", True, True, ""),
    # LaTeX escaped twice (\\frac), as JSON written from a string literal has it
    ("gold escaped twice", r"\\left( 2, \\frac{\\pi}{6} \\right)",
     r"\boxed{\left( 2, \frac{\pi}{6} \right)}", True, True, ""),
    ("completion escaped twice", r"\left( 2, \frac{\pi}{6} \right)",
     r"the point is $\\boxed{\\left( 2, \\frac{\\pi}{6} \\right)}$", True, True, ""),
    ("completion escaped twice", r"\left( 2, \frac{\pi}{6} \right)",
     r"$\\boxed{\\left( 2, \\frac{\\pi}{3} \\right)}$", False, False, ""),
    ("after a chain", r"\frac{17}{5}", r"$g(1)+g(2)=\frac{3}{5}+\frac{14}{5}=\boxed{\frac{17}{5}}$",
     True, True, ""),
    ("a name", r"\text{Marisol}", r"Therefore, $\boxed{\text{Marisol}}$ is fastest.", True, True,
     ""),
    ("degrees", r"45^\circ", r"the angle is $\boxed{45^\circ}.$", True, True, ""),
    ("radical", r"2\sqrt{17}", r"$\sqrt{68} = \boxed{2\sqrt{17}}$.", True, True, ""),
    ("mbox unit", r"24\mbox{ cm}^2", r"the area is $\boxed{24\mbox{ cm}^2}.$", True, True, ""),
    ("textnormal unit", "80 miles", r"The distance is $\boxed{80\textnormal{ miles}}.$", True,
     True, ""),
    ("list", "-3,2", r"the integer roots are $\boxed{-3,2}.$", True, True, ""),
    ("text after the box", "4", r"so $5^{20} \equiv \boxed{4} \pmod{7}.$", True, True, ""),
    ("base subscript", "312_4", r"a quotient of $\boxed{312_4}$.", True, True, ""),
    ("names before the box", "(5,12,-2)", r"we find $(a,b,c) = \boxed{(5,12,-2)}.$", True, True,
     ""),
    ("plus-minus", r"2 \pm \sqrt{7}", r"$x = \boxed{2 \pm \sqrt{7}}.$", True, True, ""),
    ("set with plus-minus", r"\{2\pm\sqrt{3},-1\}", r"$\boxed{\{2\pm\sqrt{3},-1\}}.$", True, True,
     ""),
    ("chain of inequalities", "g(3) < g(2) < g(6)", r"Hence, $\boxed{g(3) < g(2) < g(6)}.$", True,
     True, ""),
    ("trig product", r"2 \cos b \sin a", r"$= \boxed{2 \cos b \sin a}.$", True, True, ""),
    ("fraction of names", r"\frac{\pi s}{k+s}", r"The answer is $\boxed{\frac{\pi s}{k+s}}$.",
     True, True, ""),
    ("spaced sqrt", r"\sqrt{3}+\sqrt{7}", r"$\boxed{\sqrt 3+\sqrt 7}$", True, True, ""),
    ("short frac times pi", r"\frac{7}{4}\pi", r"$\boxed{\frac74\pi}$.", True, True, ""),
    ("same box restated", r"so \boxed{007}. Checking again, \boxed{007}", r"$\boxed{007}$", True,
     True, ""),
    ("gold box twice, text between",
     "therefore\\boxed{615}.,but let me explain.\n\n**Final Answer**\n\\boxed{615}",
     r"\boxed{615}", True, True, ""),
    ("two different boxes", "[-1,4]",
     r"so it is $\boxed{[-1, 4]}$. Let me correct it: $\boxed{(-\infty, -1] \cup [4, \infty)}$.",
     False, False, ""),
    ("final answers in two boxes", r"so $n = \boxed{2,-3}.$",
     r"**Final Answer** The integers are \boxed{-3} and \boxed{2}.", False, True, BOXES),
    ("pairs in separate boxes", "(3, 3), (7, 3)",
     r"\boxed{(3, 3)} \quad \text{and} \quad \boxed{(7, 3)}", False, True, BOXES),
    ("assignments in separate boxes", "m = 12, t = 5",
     r"\boxed{m = 12} \quad \text{and} \quad \boxed{t = 5}", False, True, BOXES),
    ("several boxes in a list", "(3,1),(1,3),(-2,-6),(-6,-2)",
     "solutions:\n\\[\n\\boxed{(1, 3)}, \\boxed{(3, 1)}, \\boxed{(-2, -6)}, \\boxed{(-6, -2)}\n\\]",
     False, True, BOXES),
    ("gold boxes side by side", r"$\boxed{3}\boxed{4}$", r"$\boxed{3,4}$", None, True, GOLD_BOXES),
    ("gold boxes with words", r"\(\boxed{2}\) and \(\boxed{-5}\).", r"$\boxed{-5,2}$.", None, True,
     GOLD_BOXES),
    ("gold boxes listed", r"$$\boxed{3}, \boxed{5}, \boxed{11}$$", r"$$\boxed{3, 5, 11}$$", None,
     True, GOLD_BOXES),
    ("gold boxes in a sentence", r"\boxed{2} papers and \boxed{5} bins", r"$\boxed{2,5}$", None,
     True, GOLD_BOXES),
    ("gold boxes with noise", r"\boxed{2} no no no \boxed{5}", r"$\boxed{2,5}$", None, False,
     GOLD_BOXES),
    # -- relations
    (">= and geq", "x >= 4", r"\boxed{x \geq 4}", True, True, ""),
    ("< and lt", "x < 6", r"\boxed{x \lt 6}", True, True, ""),
    ("leq and <=", r"x \leq 9", r"\boxed{x <= 9}", True, True, ""),
    ("> and gt", "x > 2", r"\boxed{x \gt 2}", True, True, ""),
    ("!= and neq", "x != 8", r"\boxed{x \neq 8}", True, True, ""),
    ("neq and !=", r"x \neq 8", r"\boxed{x != 8}", True, True, ""),
    ("direction", "x > 2", r"\boxed{x < 2}", False, False, ""),
    ("direction", r"x \geq 2", r"\boxed{x \leq 2}", False, False, ""),
    ("flipped", r"x \leq 9", r"\boxed{9 \geq x}", True, True, ""),
    ("flipped", r"x \geq 9", r"\boxed{9 \leq x}", True, True, ""),
    ("chained equals", "y = 13", r"\boxed{y = 6+6+1 = 13}", True, True, ""),
    ("value and equation", "13", r"\boxed{y=13}", True, True, ""),
    ("approximately", "14", r"\boxed{t\approx14}", True, True, ""),
    ("approximately a decimal", r"\frac{2}{7}", r"\boxed{p \approx 0.2857143}", True, True, ""),
    ("approximately a decimal", r"\frac{2}{7}", r"\boxed{p \approx 0.29}", False, False, ""),
    ("approximately a decimal", r"\sqrt{3}", r"\boxed{h \approx 1.7320508}", True, True, ""),
    ("negated", "x < 4", r"\boxed{-x > -4}", True, True, ""),
    ("not negated", "x < 4", r"\boxed{x > -4}", False, False, ""),
    ("negated, non-strict", "x <= 4", r"\boxed{-x >= -4}", True, True, ""),
    ("equation vs its constant", "b + 5w = 0", r"\boxed{0}", False, False, ""),
    ("equation vs its constant", "3x + w = 2", r"\boxed{2}", False, False, ""),
    ("equation vs its constant", "c^2 + d = 0", r"\boxed{0}", False, False, ""),
    ("equation vs its side", "9 = 4b+d", r"\boxed{4b+d}", False, False, ""),
    ("name = value", "m=3", r"\boxed{3}", True, True, ""),
    ("value and name =", "3", r"\boxed{m=3}", True, True, ""),
    ("wrong working, right value", "w = 1 + 2 = 3", r"\boxed{w = 4-2 = 3}", True, True, ""),
    ("line, two forms", "3x+6y-4=0", r"\boxed{y=-\frac{1}{2}x+\frac{2}{3}}", True, True, ""),
    ("ellipse, scaled", "x^2/9 + y^2/5 = 1", r"\boxed{x^2/36 + y^2/20 = 1/4}", True, True, ""),
    ("plane, scaled by -1", "12x+7y-3z+40=0", r"\boxed{-12x-7y+3z-40=0}", True, True, ""),
    ("relation and set", r"-3 \le x \le 8", r"\boxed{x \in [-3,8]}", True, True, ""),
    ("set and relation", r"x \in [-3,8]", r"\boxed{-3 \le x \le 8}", True, False,
     "policy symmetric: an inequality is a set on either side (Math-Verify compares them only "
     "when the gold is the inequality, by default)"),
    ("bounds", "-512 < b < 17", r"\boxed{(-512, 17)}", True, True, ""),
    ("bounds of a function", "0<g(x)<2", r"\boxed{(0,2)}", True, True, ""),
    ("inequality", r"m \ge 3", r"\boxed{m \ge 3}", True, True, ""),
    ("slanted >=", r"t \ge 4", r"\boxed{t \geqslant 4}", True, True, ""),
    ("slanted >=", r"t \le 4", r"\boxed{t \geqslant 4}", False, False, ""),
    ("slanted <=", r"t \le 4", r"\boxed{t \leqslant 4}", True, True, ""),
    ("logical or", r"(-\infty,-2]\cup[6,\infty)", r"\boxed{v \le -2 \lor v \ge 6}", True, False,
     SPELLING),
    ("logical or", r"(-\infty,-2]\cup[6,\infty)", r"\boxed{v < -2 \lor v \ge 6}", False, False,
     ""),
    ("logical or", "4, 9", r"\boxed{k=4 \vee k=9}", True, False, SPELLING),
    ("the real line", r"\mathbb{R}", r"\boxed{(-\infty,\infty)}", True, True, ""),
    ("the real line", r"(-\infty, \infty)", r"the domain is $\boxed{\mathbb{R}}$", True, True, ""),
    ("the real line", r"(-\infty,\infty)", r"\boxed{ℝ}", True, True, ""),
    ("the real line", r"(-\infty,\infty)", r"\boxed{t \in \mathbb{R}}", True, True, ""),
    ("the real line", r"\mathbb{R}", r"\boxed{[0,\infty)}", False, False, ""),
    ("the real line", r"\mathbb{R}", r"\boxed{R}", False, False, ""),
    ("the real plane", r"\mathbb{R}^2", r"\boxed{\mathbb{R}^2}", True, True, ""),
    ("the real plane", r"\mathbb{R}^2", r"\boxed{\mathbb{R}^3}", False, False, ""),
    ("lcm by name", "15", r"\boxed{\operatorname{lcm}(3, 5)}", True, True, ""),
    ("lcm by name", "45", r"\boxed{\text{lcm}(9,15)}", True, False, SPELLING),
    ("lcm by name", "30", r"\boxed{\text{lcm}(9,15)}", False, False, ""),
    ("gcd by name", "3", r"\boxed{\mathrm{gcd}(9,15)}", True, False, SPELLING),
    ("bmod", "4", r"\boxed{11 \bmod 7}", True, False, SPELLING),
    ("bmod", "3", r"\boxed{11 \bmod 7}", False, False, ""),
    ("\\not=", r"w \neq 6", r"\boxed{w \not= 6}", True, False, SPELLING),
    # -- matrices
    ("identity", r"\begin{pmatrix}1 & 0 \\ 0 & 1\end{pmatrix}",
     r"The identity is $\boxed{\begin{pmatrix}1 & 0 \\ 0 & 1\end{pmatrix}}$.", True, True, ""),
    ("bmatrix and pmatrix", r"\begin{bmatrix}0 & 0 \\0 & 0\end{bmatrix}",
     r"$\boxed{\begin{pmatrix}0 & 0 \\0 & 0\end{pmatrix}}$", True, True, ""),
    ("array in brackets", r"\begin{pmatrix}2 & 5 \\7 & 1\end{pmatrix}",
     r"$\boxed{\left[\begin{array}{cc}2 & 5 \\7 & 1\end{array}\right]}$", True, True, ""),
    ("fraction entries",
     r"\begin{pmatrix}\frac{1}{3} & \frac{2}{5} \\ \frac{3}{7} & \frac{4}{9}\end{pmatrix}",
     r"\boxed{\begin{pmatrix}\frac{1}{3} & \frac{2}{5} \\ \frac{3}{7} & \frac{4}{9}\end{pmatrix}}",
     True, True, ""),
    ("matrix sum", r"\begin{pmatrix}3 & 5 \\ 7 & 9\end{pmatrix}",
     r"\boxed{\begin{pmatrix}1 & 2 \\ 3 & 4\end{pmatrix}"
     r" + \begin{pmatrix}2 & 3 \\ 4 & 5\end{pmatrix}}",
     True, True, ""),
    ("matrix product", r"\begin{pmatrix}2 & 0 \\ 0 & 2\end{pmatrix}",
     r"\boxed{\begin{pmatrix}1 & 0 \\ 0 & 1\end{pmatrix}"
     r" \begin{pmatrix}2 & 0 \\ 0 & 2\end{pmatrix}}",
     True, True, ""),
    ("wrong entry", r"\begin{pmatrix}2 & 5 \\ 7 & 1\end{pmatrix}",
     r"\boxed{\begin{pmatrix}2 & 5 \\ 7 & 2\end{pmatrix}}", False, False, ""),
    ("trailing row break", r"\begin{pmatrix}-\frac{5}{3}&-1\\2&\frac{1}{3}\\\end{pmatrix}",
     r"\boxed{\begin{pmatrix}-\frac{5}{3}&-1\\2&\frac{1}{3}\end{pmatrix}}", True, True, ""),
    ("cube root entries", r"\begin{pmatrix}\frac{1}{2\sqrt[3]{y}^2}&0\\0&1\end{pmatrix}",
     r"\boxed{\begin{pmatrix}\frac{1}{2y^{2/3}}&0\\0&1\end{pmatrix}}", True, True, ""),
    ("letter after a row break", r"\begin{pmatrix} p \\ q \end{pmatrix}",
     r"\boxed{\begin{pmatrix}p\\q\end{pmatrix}}", True, True, ""),
    ("letter after a row break", r"\begin{pmatrix} p \\ q \end{pmatrix}",
     r"\boxed{\begin{pmatrix}q\\p\end{pmatrix}}", False, False, ""),
    ("names in a matrix", r"\begin{pmatrix} 2 & a \\ b & 7 \end{pmatrix}",
     r"\boxed{\begin{bmatrix}2&a\\b&7\end{bmatrix}}", True, True, ""),
    # -- expressions, exactness
    ("decimal for a fraction", r"\frac{1}{6}", r"\boxed{0.1666666666666667}", True, True, ""),
    ("decimal in a tuple", r"(2,\frac{7}{2})", r"\boxed{(2,3.5)}", True, True, ""),
    ("split fraction", r"\frac{y+3}{5}", r"\boxed{\frac{y}{5}+\frac{3}{5}}", True, True, ""),
    ("trig identity", r"\cot^2(t)+1", r"\boxed{\csc^2(t)}", True, True, ""),
    ("order of terms", r"\frac{\sqrt{\sqrt{7}+\sqrt{130}}}{11+2\sqrt{21}}",
     r"\boxed{\frac{\sqrt{\sqrt{7}+\sqrt{130}}}{2\sqrt{21}+11}}", True, True, ""),
    ("missing factor", "(c+4)(d+1)", r"\boxed{(+4)(d+1)}", False, False, ""),
    ("golden ratio", "2", r"\boxed{\frac{1+\sqrt{5}}{2}}", False, False, ""),
    ("near miss", "5", r"\boxed{\frac{40}{16}+\frac{\sqrt{1000}}{16}}", False, False, ""),
    ("coefficient one", r"1\sqrt{23}", r"\boxed{1}", False, False, ""),
    ("extra term", "y+3m+1", r"\boxed{y+1}", False, False, ""),
    ("root factor", "5", r"\boxed{5\sqrt{3}}", False, False, ""),
    ("15-digit decimal", "4.795831523312719", r"\boxed{\sqrt{23}}", True, True, ""),
    ("4-digit decimal", r"\frac{1}{3}", r"\boxed{0.3333}", False, False, ""),
    ("2-digit matrix entries", r"(\begin{pmatrix}\frac{1}{3}\\ \frac{1}{5} \end{pmatrix})",
     r"\boxed{\begin{pmatrix}0.33\\0.2 \end{pmatrix}}", False, False, ""),
    ("4-digit interval end", r"(\frac{2}{5},\frac{7}{3}]", r"\boxed{(0.4,2.3333]}", False, False,
     ""),
    ("sign of a term", r"2 - \frac{1}{\mathrm{e}}", r"\boxed{2 + \frac{1}{\mathrm{e}}}", False,
     False, ""),
    ("e in mathrm", r"2 - \frac{1}{\mathrm{e}}", r"\boxed{2 - \frac{1}{\mathrm{e}}}", True, True,
     ""),
    ("function of another variable", "f(x)", r"\boxed{f(y)}", False, False, ""),
    # -- lists, tuples, labels, assignments
    ("list with a name", "m=2, 5, 7", r"\boxed{m=2, 5, 7}", True, True, ""),
    ("list with a name", "m=5, 7, 9", r"\boxed{m=2, 5, 7}", False, False, ""),
    ("named tuple", "D = (2, 3)", r"\boxed{D = (2, 3)}", True, True, ""),
    ("named tuple", "D = (2, 3)", r"\boxed{D = (2, 3.5)}", False, False, ""),
    ("list words", "23, 51, and 88", r"\boxed{23, 51, \text{ and } 88}", True, True, ""),
    ("list words", "23, 51, and 88", r"\boxed{27, 31, and 88}", False, False, ""),
    ("plus-minus vs one", r"\pm 1999", r"\boxed{1999}", False, False, ""),
    ("plus-minus vs braces", r"\pm 1999", r"\boxed{{-1999, 1999}}", True, True, ""),
    ("tuple vs braces", "(4,1)", r"\boxed{{1,4}}", False, False, ""),
    ("lbrace set", r"\{3,8\}", r"\boxed{\lbrace 8,3\rbrace}", True, False, SPELLING),
    ("empty set", r"\emptyset", r"\boxed{\varnothing}", True, False, SPELLING),
    ("empty set", r"\varnothing", r"\boxed{\{\}}", True, False, SPELLING),
    ("empty set", r"\emptyset", r"\boxed{\{0\}}", False, False, ""),
    ("angle-bracket vector", "(3,8)", r"\boxed{\langle 3,8\rangle}", True, False, SPELLING),
    ("angle-bracket vector", "(3,8)", r"\boxed{\langle 8,3\rangle}", False, False, ""),
    ("tuple vs braces", "(1,4)", r"\boxed{{1,4}}", False, True,
     "policy tuple: (1,4) is ordered, the list 1, 4 is not"),
    ("time", "11:00", r"\boxed{2:00}", False, False, ""),
    ("time", "11:00", r"\boxed{11:00}", True, True, ""),
    ("time, colon in braces", "10:15", r"\boxed{10{:}15}", True, False, SPELLING),
    ("sum recurrence", r"G_n = \sum_{j=0}^{n-1} G_j G_{n-j-1}",
     r"\boxed{G_n = \sum_{j=0}^{n-2} G_j G_{n-j-2}}", False, False, ""),
    ("sum recurrence", r"G_n = \sum_{j=0}^{n-1} G_j G_{n-j-1}",
     r"\boxed{G_n = \sum_{j=0}^{n-1} G_{n-j-1} G_j}", True, True, ""),
    ("tuples in any order", "(41,2,2,17),(13,2,2,5),(2,41,2,17)",
     r"\boxed{(2, 41, 2, 17), (41,2,2,17), (13, 2, 2, 5)}", True, True, ""),
    ("a tuple short", "(41,2,2),(13,2,2,5),(2,41,2,17)",
     r"\boxed{(2, 41, 2, 17), (41,2,2,17), (13, 2, 2, 5)}", False, False, ""),
    ("tuple of names", "(a,b)=(5,4)", r"\boxed{(5,4)}", True, True, ""),
    ("tuple of three names", "(a,b,c)=(4,1,9)", r"\boxed{(4,1,9)}", True, True, ""),
    ("; in tuples", "(1;0;0),(1;-3;0),(5;0;0),(5;-3;0)",
     r"\boxed{(5, -3, 0), (1, 0, 0), (5, 0, 0), (1, -3, 0)}", True, True, ""),
    ("; list and set", "-9;-7;-4;-2", r"\boxed{\{-9, -7, -4, -2\}}", True, True, ""),
    ("absolute value bounds", r"2\leq|w|\leq \frac{5}{2}",
     r"\boxed{w \in \left[-\frac{5}{2}, -2\right] \cup \left[2, \frac{5}{2}\right]}", True, True,
     ""),
    ("labels", "PQ=6,RS=9", r"\boxed{6, 9}", True, True, ""),
    ("or without spaces", "(13,5)or(5,13)", r"\boxed{(5,13),\ (13,5)}", True, True, ""),
    ("ratio label", r"S_{ABCD}:S=5:18", r"\boxed{5:18}", True, True, ""),
    ("ratio label", "V_{1}:V_{2}=13:29", r"\boxed{13:29}", True, True, ""),
    ("fraction label", r"\frac{KM}{LM}=\frac{1}{\sqrt{7}}", r"\boxed{\frac{1}{\sqrt{7}}}", True,
     True, ""),
    ("assignments grouped by ;", "a=3,b=2;a=5,b=2", r"\boxed{(3,2),(5,2)}", True, True, ""),
    ("abs label", "|PQ|=3", r"\boxed{3}", True, True, ""),
    ("ratio label", "P:Q=3", r"\boxed{3}", True, True, ""),
    ("function label", "h(x)=3", r"\boxed{3}", True, True, ""),
    ("assignments reordered", "b_4 = 3, b_{29} = 11", r"\boxed{b_{29} = 11, \quad b_4 = 3}", True,
     True, ""),
    ("two assignments", r"\boxed{x = -7,\ q = \frac{11}{3}}", r"$\boxed{-7, \frac{11}{3}}$", True,
     True, ""),
    ("assignment, then a list", r"\boxed{b=6,\,-1,\,-12}", r"$\boxed{-12,-1,6}$", True, True, ""),
    ("or between functions", r"\boxed{P(n) = 2 \text{ and } P(n) = -2}", r"\boxed{P(n)=2orP(n)=-2}",
     True, False, "reads: 'or' without spaces between two equations"),
    ("$ or $", "$30,17$ or $9$", r"\boxed{30,17,9}", True, True, ""),
    ("and between assignments", r"\[ \boxed{q = -3 \text{ and } q = \dfrac{17}{6}} \]",
     r"$\boxed{q=-3,q=\frac{17}{6}}$", True, True, ""),
    ("and in a box", r"\(\boxed{5 \text{ and } 9}\)", r"$\boxed{5,9}$", True, True, ""),
    ("and in both boxes", r"7 \text{ and } 10", r"\boxed{7 \text{ and } 10}", True, True, ""),
    ("and between $", "$2$ and $4$ and $6$", r"\boxed{2,4,6}", True, True, ""),
    ("list of pairs", "(4, 4), (2, 5), (5, 5)", r"\boxed{(4, 4), (2, 5), (5, 5)}", True, True, ""),
    ("names and pairs", "(3, 7), (7, 3)", r"\boxed{(x, y) = (3, 7) \quad \text{and} \quad (7, 3)}",
     True, True, ""),
    ("assignments with plus-minus", r"x = \frac{1}{3}, x = \frac{-2 \pm \sqrt{7}}{5}",
     r"\boxed{x = \frac{1}{3}, x = \frac{-2 \pm \sqrt{7}}{5}}", True, True, ""),
    ("function equation", "g(t) = t", r"\boxed{g(t) = t}", True, True, ""),
    # -- text
    ("word in text", r"\text{even}", r"\boxed{even}", True, True, ""),
    ("capital word", r"\text{Odd}", r"\boxed{Odd}", True, True, ""),
    ("e in text", r"\text{e}", r"\boxed{e}", True, True, ""),
    ("letter in text", r"\text{E}", r"\boxed{E}", True, True, ""),
    ("letter in text", r"$\text{D}$", r"$\boxed{D}$", True, True, ""),
    ("other letter", "c", r"\boxed{\text{E}}", False, False, ""),
    ("choice letter", r"\(\boxed{\text{B}}\).", r"$\boxed{\text{(B)}}.$", True, True, ""),
    ("sentence", r"\text{The diagonals bisect each other}",
     r"\boxed{\text{The diagonals bisect each other}}", True, True, ""),
    ("unit word in text", r"0.08 \text{ yuan}", r"\boxed{0.08 \text{ yuan}}", True, True, ""),
    ("plain", "529", r"\boxed{529}", True, True, ""),
]

_IDS = [f"{i}:{c[0]}" for i, c in enumerate(CASES)]


@pytest.fixture(scope="module")
def verdicts() -> list:
    with MathVerifier(workers=2, timeout=10.0) as v:
        return list(v.score({"completion": c, "answer": g} for _, g, c, *_ in CASES))


@pytest.mark.parametrize("i", range(len(CASES)), ids=_IDS)
def test_our_verdict(verdicts: list, i: int) -> None:
    topic, gold, completion, ours, _, note = CASES[i]
    v = verdicts[i]
    assert v.correct is ours, (topic, gold, completion, v.reason, v.detail)
    assert v.reward == (1.0 if ours else 0.0)
    if ours is None:  # only a gold we can't read is not judged
        assert v.reason == "unparseable gold" and note == GOLD_BOXES


def test_every_difference_from_math_verify_has_its_note() -> None:
    for topic, gold, _, ours, mv, note in CASES:
        if bool(ours) != mv:  # a policy we keep, or something we read that Math-Verify doesn't
            assert note.startswith(("policy ", "reads: ")), (topic, gold, "differs, no note")
        else:
            assert not note or note == GOLD_BOXES, (topic, gold, "a note where nothing differs")
    differ = sum(bool(ours) != mv for _, _, _, ours, mv, _ in CASES)
    assert differ < len(CASES) // 5  # the table is mostly agreement, by construction


def test_math_verify_column_is_what_math_verify_says() -> None:
    pytest.importorskip("math_verify")
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    wrong = []
    for topic, gold, completion, _, mv, _ in CASES:
        marked = any(m in gold for m in ("$", "\\boxed", "\\[", "\\("))
        g = gold if marked else f"${gold}$"
        got = bool(verify(parse(g, configs), parse(completion, configs), float_rounding=6))
        if got != mv:
            wrong.append((topic, gold, completion, got))
    assert not wrong
