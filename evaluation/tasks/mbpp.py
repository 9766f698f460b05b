"""MBPP (Austin et al. 2021): write a Python function from a description and three asserts.

Harness: lm-eval `mbpp` (3 fixed shots: task ids 2-4, `[BEGIN]`/`[DONE]` framing, greedy, the raw completion run
against the three tests; pass@1). Paper: the same 3-shot prompt, pass@1 from samples at temperature 0.1 and pass@80
from samples at 0.8 (`--num-samples`, default 200; the paper gives no n).
"""

from dataclasses import replace

from .base import DataSource, Task

SHOTS = (
    {"task_id": 2, "text": "Write a function to find the similar elements from the given two tuple lists.",
     "code": "def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & set(test_tup2))\r\n  return (res) ",
     "test_list": ["assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
                   "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
                   "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)"], "is_fewshot": True},
    {"task_id": 3, "text": "Write a python function to identify non-prime numbers.",
     "code": "import math\r\ndef is_not_prime(n):\r\n    result = False\r\n    for i in range(2,int(math.sqrt(n)) + 1):\r\n        if n % i == 0:\r\n            result = True\r\n    return result",
     "test_list": ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True",
                   "assert is_not_prime(35) == True"], "is_fewshot": True},
    {"task_id": 4, "text": "Write a function to find the largest integers from a given list of numbers using heap queue algorithm.",
     "code": "import heapq as hq\r\ndef heap_queue_largest(nums,n):\r\n  largest_nums = hq.nlargest(n, nums)\r\n  return largest_nums",
     "test_list": ["assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] ",
                   "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] ",
                   "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, 58, 35]"],
     "is_fewshot": True},
)


def doc_to_text(doc: dict) -> str:
    """Description, the three tests, then `[BEGIN]`."""
    t = doc["test_list"]
    return (f"You are an expert Python programmer, and here is your task: {doc['text']} Your code should pass these "
            f"tests:\n\n{t[0]}\n{t[1]}\n{t[2]}\n[BEGIN]\n")


def doc_to_target(doc: dict) -> str:
    """A shot's answer is its code then `[DONE]`; an evaluated document's target is its tests."""
    if "is_fewshot" in doc:
        return f"{doc['code']}\n[DONE]"
    t = doc["test_list"]
    return f"{t[0]}\n{t[1]}\n{t[2]}"


HARNESS = Task(
    name="mbpp",
    source=DataSource("google-research-datasets/mbpp", "full", "test", "mbpp.jsonl", ("task_id", "text", "test_list")),
    output_type="generate_until",
    doc_to_text=doc_to_text,
    doc_to_target=doc_to_target,
    target_delimiter="",
    num_fewshot=3,
    fewshot_sampler="first_n",
    fixed_fewshot=SHOTS,
    generation={"until": ["[DONE]"], "do_sample": False},
    filters=(("none", lambda text: text),),
    metrics=("pass@1",),
)
PAPER = replace(
    HARNESS, protocol="paper",
    generation={**HARNESS.generation, "code_samples": ((0.1, (1,)), (0.8, (80,))), "n": 200},
    metrics=("pass@k",),
)


def program(doc: dict, completion: str) -> str:
    """The raw completion is the program (lm-eval's mbpp has no filter)."""
    return completion
