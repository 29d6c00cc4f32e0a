//! Test library: a perfectly good shared object that is not a kdharness plugin.

#[unsafe(no_mangle)]
pub extern "C" fn kdhtest_add(a: i32, b: i32) -> i32 {
    a + b
}
