"""The review page's web app (Starlette, which MLflow brings; Jinja2 for the one page): the suspects with
their images and neighbours, and one route that records a decision. It serves only the images the reviewed
run indexed, named by their exact indexed path; every decision is saved at once (pipeline.data.decisions)."""

from dataclasses import asdict
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from pipeline.data import decisions as decisions_file
from pipeline.data.decisions import Decision, Decisions
from pipeline.errors import PipelineError
from pipeline.review.gradcam import Explainer
from pipeline.review.suspects import KINDS, ReviewRun

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")


class Review:
    """The run under review and its decisions, by indexed path."""

    def __init__(self, run: ReviewRun, on_save=None) -> None:
        self.run, self.on_save = run, on_save  # on_save(path): e.g. log the file to the run in MLflow
        saved = decisions_file.load(run.decisions_path) if run.decisions_path.is_file() else None
        by_relative = saved.by_path if saved else {}
        self.decided = {
            s.path: by_relative[key]
            for s in run.suspects
            if (key := decisions_file.relative(s.path, run.root)) in by_relative
        }

    def decide(self, path: str, action: str, label: str | None, kind: str | None = None) -> Decision:
        """Record a decision on a suspect (in the list `kind`, for an image in more than one) and save the
        file; a request that names anything else is refused."""
        suspect = next((s for s in self.run.suspects if s.path == path and kind in (None, s.kind)), None)
        if suspect is None:
            raise PipelineError("not a suspect of this run")
        if action == "accept":
            if suspect.suggested is None:
                raise PipelineError("this image has no suggested label")
            action, label = "relabel", suspect.suggested
        if action == "relabel" and label == suspect.label:
            action, label = "keep", None  # relabelled to the label it has: kept as is
        decision = decisions_file.parsed(path, {"action": action, "kind": suspect.kind, "label": label})
        if decision.label is not None and decision.label not in self.run.classes:
            raise PipelineError(f"{decision.label!r} is not a class of this run")
        self.decided[path] = decision
        relative = {decisions_file.relative(path, self.run.root): decision}
        decisions_file.save(self.run.decisions_path, Decisions(self.run.run_id, self.run.root, relative))
        if self.on_save:
            self.on_save(self.run.decisions_path)
        return decision

    def progress(self) -> dict:
        return {"decided": len(self.decided), "total": len(self.run.suspects)}


def create_app(review: Review) -> Starlette:
    async def page(request: Request) -> Response:
        labels, decided = review.run.labels, review.decided
        suspects = [
            {
                **asdict(s),
                "neighbours": [{"path": n, "label": labels.get(n, "?")} for n in s.neighbours],
                "decision": asdict(decided[s.path]) if s.path in decided else None,
            }
            for s in review.run.suspects
        ]
        context = {"run": review.run, "suspects": suspects, "kinds": KINDS, "progress": review.progress(),
                   "has_model": review.run.checkpoint is not None}  # fmt: skip
        return TEMPLATES.TemplateResponse(request, "review.html", context)

    async def image(request: Request) -> Response:
        path = request.query_params.get("path", "")
        if path not in review.run.labels or not Path(path).is_file():  # only what the run indexed
            return JSONResponse({"error": "not an image of this run"}, status_code=404)
        return FileResponse(path)

    async def decide(request: Request) -> Response:
        try:
            body = await request.json()
            found = (str(body["path"]), str(body["action"]), body.get("label"), body.get("kind"))
            decision = await run_in_threadpool(review.decide, *found)
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "send JSON with path, action and, to relabel, label"}, 400)
        except PipelineError as err:
            return JSONResponse({"error": str(err).removeprefix("data.decisions: ")}, 400)
        return JSONResponse({"decision": asdict(decision), **review.progress()})

    explainer = Explainer(review.run.checkpoint) if review.run.checkpoint else None

    async def gradcam(request: Request) -> Response:
        path = request.query_params.get("path", "")
        if explainer is None or path not in {s.path for s in review.run.suspects}:
            return JSONResponse({"error": "no model or not a suspect of this run"}, status_code=404)
        png, predicted = await run_in_threadpool(explainer.png, path)
        return Response(png, media_type="image/png", headers={"X-Predicted": predicted})

    routes = [
        Route("/", page),
        Route("/image", image),
        Route("/gradcam", gradcam),
        Route("/decide", decide, methods=["POST"]),
    ]
    return Starlette(routes=routes)
