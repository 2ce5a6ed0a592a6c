"""
The Space's page: its tabs, the API endpoints and the queue (`build_demo`), and how it is launched
(`launch_kwargs`). What the buttons do is in `handlers.py`; this file only lays out components and wires them.
"""

from __future__ import annotations

import os

import gradio as gr
from starlette.middleware import Middleware

from distill_mos import DistillMOSScorer
from formatting import TABLE_COLUMNS
from handlers import Handlers
from live import RAW_MICROPHONE_HEAD, LiveSessions, live_tab
from scoring import Example, SpaceScorer, load_examples
from settings import MODEL_ID, WINDOW_SECONDS, Limits, load_scorer
from stream_chunks import CHUNK_NUMBERING_HEAD, RecordStreamChunks

# Scoring events run without Gradio's concurrency limit: `scoring.Lanes` limits them, in two lanes, so that a short
# request does not wait behind long ones in one queue (Gradio's limit is per event, fixed before the audio is seen).
LANES = {"concurrency_limit": None}

ABOUT = """
**What the score means.** Distill-MOS predicts the mean opinion score (MOS) that listeners would give this speech
on the ACR scale: 1 bad, 2 poor, 3 fair, 4 good, 5 excellent. It rates overall quality (noise, distortion, codec
artefacts, dropouts), not content, speaker or accent. The model scores {window} s windows; a longer clip gets a
window every second or so and its MOS is their mean (the plot shows them). Audio is resampled to 16 kHz and the
first channel is scored.

**Where it is less reliable.** It was trained on English speech at 16 kHz bandwidth: quality above 8 kHz is not
heard, and other languages are less reliable. On out-of-domain text-to-speech it is weak: Pearson correlation with
listeners is 0.22 and 0.32 on the French Blizzard 2023 TTS sets, against 0.95 on Tencent and 0.84 on TCD-VoIP
(paper's benchmark table, Stahl & Gamper, ICASSP 2025, [arXiv 2502.05356](https://arxiv.org/abs/2502.05356)). A single
clip's score is an estimate: compare systems over many clips. Silent or very short audio gets no
meaningful score.
"""


def one_clip_tab(handlers: Handlers, examples: list[Example]) -> None:
    with gr.Row():
        with gr.Column():
            audio = gr.Audio(
                sources=["upload", "microphone"], type="filepath", label="Speech (upload or record)",
                elem_id="audio-input",
            )
            score_button = gr.Button("Score", variant="primary", elem_id="score-button")
        with gr.Column():
            result = gr.Markdown(
                "Upload a file or record from the microphone, then press **Score**.", elem_id="result"
            )
            plot = gr.HTML(visible=False, elem_id="window-plot", js_on_load=None)
            with gr.Accordion("Details (JSON)", open=False):
                detail_json = gr.JSON(label="details", elem_id="details")
    score_button.click(
        handlers.score_one, audio, [result, plot, detail_json],
        api_name="score_ui", api_visibility="undocumented", **LANES,
    )
    if examples:
        gr.Examples(
            examples=[[str(e.path)] for e in examples],
            inputs=[audio],
            outputs=[result, plot, detail_json],
            fn=handlers.score_one,
            run_on_click=True,
            cache_examples=False,
            example_labels=[f"GenSpeech · {e.condition} · human MOS {e.human_mos:.2f}" for e in examples],
            label="Examples: GenSpeech clips (Apache-2.0) with their human MOS; click one to score it",
        )


def several_files_tab(handlers: Handlers) -> None:
    # No file_types filter: Gradio would refuse the whole request for one file it does not class as
    # audio (.webm, .mp4, a stray .txt); each file instead gets its own row, a score or the reason.
    files = gr.File(
        file_count="multiple", type="filepath", label="Audio files (wav, flac, mp3, m4a, ogg, webm, ...)",
        elem_id="files-input",
    )
    many_button = gr.Button("Score all", variant="primary", elem_id="score-all-button")
    many_status = gr.Markdown(label="status", elem_id="batch-status")
    table = gr.Dataframe(
        headers=TABLE_COLUMNS, interactive=False, label="scores", elem_id="batch-table", wrap=True
    )
    csv_file = gr.File(label="Download CSV", interactive=False, visible=False, elem_id="batch-csv")
    histogram = gr.Image(label="MOS distribution", visible=False, interactive=False, elem_id="batch-histogram")
    many_button.click(
        handlers.score_many, files, [many_status, table, csv_file],
        api_name="score_many", api_visibility="public", **LANES,
    ).then(handlers.show_csv, csv_file, csv_file, api_visibility="private", queue=False).then(
        handlers.batch_histogram, table, histogram, api_visibility="private", queue=False
    )


def compare_tab(handlers: Handlers) -> None:
    gr.Markdown(
        "Score two clips of the same speech, e.g. **before / after** an enhancement or a codec, and see "
        "both scores, their difference and both per-window curves on one time axis."
    )
    with gr.Row():
        clip_a = gr.Audio(
            sources=["upload", "microphone"], type="filepath", label="A (e.g. before)", elem_id="compare-a",
        )
        clip_b = gr.Audio(
            sources=["upload", "microphone"], type="filepath", label="B (e.g. after)", elem_id="compare-b",
        )
    compare_button = gr.Button("Compare", variant="primary", elem_id="compare-button")
    compare_result = gr.Markdown("Give two clips, **A** and **B**, then press **Compare**.", elem_id="compare-result")
    compare_plot_html = gr.HTML(visible=False, elem_id="compare-plot", js_on_load=None)
    with gr.Accordion("Details (JSON)", open=False):
        compare_json = gr.JSON(label="comparison", elem_id="compare-details")
    compare_button.click(
        handlers.compare, [clip_a, clip_b], [compare_result, compare_plot_html, compare_json],
        api_name="compare_ui", api_visibility="undocumented", **LANES,
    )
    gr.Markdown(
        "### Two systems\nUpload the outputs of two systems (e.g. two codecs or enhancers on the same utterances); "
        "files pair by name. You get each system's mean MOS with a 95% bootstrap interval, the mean paired "
        "difference with its interval and a Wilcoxon signed-rank p-value, and the files not in both."
    )
    with gr.Row():
        files_a = gr.File(file_count="multiple", type="filepath", label="System A files", elem_id="systems-a")
        files_b = gr.File(file_count="multiple", type="filepath", label="System B files", elem_id="systems-b")
    systems_button = gr.Button("Compare systems", elem_id="systems-button")
    systems_result = gr.Markdown(elem_id="systems-result")
    systems_plot = gr.Image(label="means and paired difference", interactive=False, elem_id="systems-plot")
    systems_button.click(
        handlers.compare_systems, [files_a, files_b], [systems_result, systems_plot],
        api_name="compare_systems", api_visibility="undocumented", **LANES,
    )


def api_endpoints(handlers: Handlers) -> None:
    """
    The API for gradio_client (see README): /predict takes one audio file and returns a JSON object, /compare takes
    two and returns both results and their difference. Hidden components, so that the API takes plain files and
    answers plain JSON whatever the page shows.
    """
    api_audio = gr.File(type="filepath", visible=False, label="audio")
    api_result = gr.JSON(visible=False, label="result")
    gr.Button(visible=False).click(handlers.score_api, api_audio, api_result, api_name="predict", **LANES)
    api_clip_a = gr.File(type="filepath", visible=False, label="clip_a")
    api_clip_b = gr.File(type="filepath", visible=False, label="clip_b")
    api_comparison = gr.JSON(visible=False, label="comparison")
    gr.Button(visible=False).click(
        handlers.compare_api, [api_clip_a, api_clip_b], api_comparison, api_name="compare", **LANES
    )


def build_demo(
    scorer: DistillMOSScorer | None = None,
    limits: Limits | None = None,
    examples: list[Example] | None = None,
) -> gr.Blocks:
    """The Space's page, queue included; not launched (see `launch_kwargs`). Loads the model if `scorer` is None."""
    limits = limits or Limits.from_env()
    examples = load_examples() if examples is None else examples
    space = SpaceScorer(scorer or load_scorer(), limits, examples)
    handlers = Handlers(space)

    with gr.Blocks(title="Distill-MOS: speech quality", delete_cache=(3600, 3600)) as demo:
        demo.space = space  # for tests and tooling
        demo.live = LiveSessions(space.scorer, limits)
        gr.Markdown(
            "# Distill-MOS: speech quality estimator\n"
            "Upload or record speech and get its predicted mean opinion score (MOS, 1–5). "
            f"Model: [{MODEL_ID}](https://huggingface.co/{MODEL_ID}) (4.1 M parameters)."
        )
        with gr.Tabs():
            with gr.Tab("One clip", id="one"):
                one_clip_tab(handlers, examples)
            with gr.Tab("Several files", id="many"):
                several_files_tab(handlers)
            with gr.Tab("Compare", id="compare"):
                compare_tab(handlers)
            with gr.Tab("Live", id="live"):
                live_tab(demo.live)
        api_endpoints(handlers)
        gr.Markdown(ABOUT.format(window=WINDOW_SECONDS))
        gr.Markdown(
            f"<small>Limits of this Space: {limits.describe()}. Larger jobs: `pip install` the model repository and "
            "use the `distill-mos` command line tool.</small>",
            elem_id="limits",
        )

    demo.queue(max_size=limits.queue_size, default_concurrency_limit=limits.concurrency)
    return demo


def launch_kwargs(limits: Limits | None = None, **overrides) -> dict:
    """`demo.launch` arguments: local by default, never a public share link, the upload size limit."""
    limits = limits or Limits.from_env()
    kwargs = {
        "server_name": os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        "server_port": int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        "share": False,
        "max_file_size": limits.max_upload_bytes,
        "max_threads": limits.worker_threads,  # requests waiting for a lane (scoring.Lanes) each hold a thread
        "show_error": False,  # gr.Error messages (readable reasons) still reach the page and clients; tracebacks never do
        "theme": gr.themes.Soft(),
        # the Live tab: the microphone without the browser's call processing; its chunks numbered
        "head": RAW_MICROPHONE_HEAD + CHUNK_NUMBERING_HEAD,
        "app_kwargs": {"middleware": [Middleware(RecordStreamChunks)]},  # every live chunk scored, none overwritten
    }
    kwargs.update(overrides)
    return kwargs
