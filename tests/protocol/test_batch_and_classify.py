"""OpenAI Batch output/error lines and the /v1/classify shapes."""

from phifleet.engine.types import LabelScores
from phifleet.protocol.batch import BatchLine, batch_request_id
from phifleet.protocol.classify import ClassifyRequest, ClassifyResponse


def test_batch_lines():
    ok = BatchLine.ok("c1", 3, {"object": "chat.completion"}).model_dump()
    assert ok["id"] == ok["response"]["request_id"] == batch_request_id("c1", 3) and ok["error"] is None
    assert ok["response"]["status_code"] == 200 and ok["id"].startswith("batch_req_")
    refused = BatchLine.failed("c2", 4, "line 4: max_tokens: bad", "invalid_request", "max_tokens").model_dump()
    assert refused["response"]["status_code"] == 400 and refused["error"] is None
    assert refused["response"]["body"]["error"]["param"] == "max_tokens"
    broken = BatchLine.failed(None, 5, "malformed JSON", "invalid_json").model_dump()
    assert broken["response"] is None and broken["error"] == {
        "code": "invalid_json",
        "message": "malformed JSON",
        "param": None,
        "line": 5,
    }
    assert batch_request_id("c1", 3) != batch_request_id("c1", 4)  # duplicates on other lines get their own id


def test_classify_request_and_response():
    req = ClassifyRequest(input="The kettle is awful.", labels=["positive", "negative"])
    [prompt] = (p.text for p in req.prompts())
    assert "The kettle is awful." in prompt and prompt.endswith("<|im_start|>assistant<|im_sep|>")
    scores = [LabelScores("negative", {"positive": -3.0, "negative": -1.0}, {}, 7)]
    body = ClassifyResponse.from_scores(scores, "phi-4").model_dump()
    assert body["object"] == "list" and body["usage"] == {"prompt_tokens": 7}
    assert body["data"][0]["label"] == "negative" and abs(sum(body["data"][0]["scores"].values()) - 1) < 1e-9
