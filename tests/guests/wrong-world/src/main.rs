//! A plain WASI command: a valid component that is not a Clancy employee.
fn main() {
    println!("I am not an employee");
}
