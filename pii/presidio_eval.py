"""Run Microsoft Presidio's analyzer on the vigil-pii corpus (JSON lines from
`vigil-pii corpus`) and print its predictions as JSON lines for
`vigil-pii eval --presidio FILE`.

No spaCy English model is available from PyPI here (the official
en_core_web_* packages are distributed from GitHub, not PyPI), so Presidio
runs with a blank spaCy English pipeline (tokenizer only, no NER, no
lemmatizer). That leaves Presidio's pattern + checksum + context recognizers
intact, which are the ones that cover the validated types compared here
(CREDIT_CARD, IBAN_CODE, US_SSN, EMAIL_ADDRESS, PHONE_NUMBER, IP_ADDRESS);
its context enhancement works on lemmas and is weakened without a lemmatizer.
Presidio has no recognizer for AWS keys, JWTs, PEM private keys or generic
tokens, so those rows show recall 0 for it.

usage: python presidio_eval.py CORPUS.jsonl > presidio.jsonl
"""
import json
import sys
import tempfile
import time

import spacy
from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.nlp_engine import SpacyNlpEngine

ENTITIES = ["CREDIT_CARD", "IBAN_CODE", "US_SSN", "EMAIL_ADDRESS", "PHONE_NUMBER", "IP_ADDRESS"]


def main():
    model_dir = tempfile.mkdtemp(prefix="blank_en_")
    spacy.blank("en").to_disk(model_dir)
    nlp = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model_dir}])
    nlp.load()
    analyzer = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])
    n = 0
    total_bytes = 0
    t0 = time.perf_counter()
    with open(sys.argv[1], encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            text = doc["text"]
            total_bytes += len(text.encode("utf-8"))
            for r in analyzer.analyze(text=text, entities=ENTITIES, language="en"):
                # Presidio reports character offsets; the corpus labels are byte offsets.
                start = len(text[: r.start].encode("utf-8"))
                end = len(text[: r.end].encode("utf-8"))
                print(json.dumps({"i": doc["i"], "type": r.entity_type, "start": start, "end": end, "score": r.score}))
            n += 1
    dt = time.perf_counter() - t0
    print(f"presidio: {n} prompts, {total_bytes} bytes in {dt:.2f} s = {total_bytes / dt / 1e6:.3f} MB/s, {dt / n * 1e3:.2f} ms per prompt", file=sys.stderr)


if __name__ == "__main__":
    main()
