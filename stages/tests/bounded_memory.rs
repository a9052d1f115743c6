//! A Parquet file of 100,000 rows (50 MB of text) is read with the heap bounded by a few
//! pages, not the file: the reader streams record batches. Measured with a counting
//! allocator, so the figure is the reader's own and not the machine's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arrow_array::{RecordBatch, StringArray};
use hone_stages::data::columnar::Columns;
use hone_stages::data::formats::{Record, TxtSplit};
use hone_stages::data::sources::{self, ReadOptions};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const ROWS: usize = 100_000;
const TEXT: usize = 500;

#[test]
fn a_file_of_100k_rows_is_read_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.parquet");
    {
        // One row group for the whole file, as small writers often leave it: the bound must
        // hold within a row group, not only across them.
        let props = WriterProperties::builder().set_max_row_group_row_count(Some(ROWS)).build();
        let file = std::fs::File::create(&path).unwrap();
        let schema = RecordBatch::try_from_iter([(
            "text",
            Arc::new(StringArray::from(vec!["x"])) as arrow_array::ArrayRef,
        )])
        .unwrap()
        .schema();
        let mut w = ArrowWriter::try_new(file, schema, Some(props)).unwrap();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for chunk in 0..ROWS / 1000 {
            let texts: Vec<String> = (0..1000)
                .map(|i| {
                    // Words that do not repeat much, so the file stays near its text's size.
                    let mut s = format!("document {} ", chunk * 1000 + i);
                    while s.len() < TEXT {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        s.push_str(&format!("{:x} ", state % 0xFFFFFF));
                    }
                    s
                })
                .collect();
            let b = RecordBatch::try_from_iter([(
                "text",
                Arc::new(StringArray::from(texts)) as arrow_array::ArrayRef,
            )])
            .unwrap();
            w.write(&b).unwrap();
        }
        w.close().unwrap();
    }
    let file_len = std::fs::metadata(&path).unwrap().len();
    assert!(file_len > 30 << 20, "the file is {file_len} bytes");

    let inputs = sources::resolve(&["big.parquet".into()], &[], dir.path()).unwrap();
    let columns = Columns::default();
    let opts = ReadOptions { txt_split: TxtSplit::BlankLine, columns: &columns, seed: 1 };
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let (mut n, mut bytes) = (0usize, 0usize);
    sources::each_record(&inputs[0], opts, Arc::new(AtomicU64::new(0)), &mut |_, r| {
        let Ok(Record::Text { text, .. }) = r else { panic!("{r:?}") };
        n += 1;
        bytes += text.len();
        Ok(())
    })
    .unwrap();
    let peak = PEAK.load(Ordering::Relaxed) - base;
    assert_eq!(n, ROWS);
    assert!(bytes >= ROWS * TEXT);
    // The text is 50 MB; the reader holds a batch of 1,024 rows and the pages it decodes.
    assert!(peak < 16 << 20, "peak heap {} MiB for {} MiB of text", peak >> 20, bytes >> 20);
    eprintln!(
        "peak heap {:.1} MiB for {} MiB of text",
        peak as f64 / (1 << 20) as f64,
        bytes >> 20
    );
}
